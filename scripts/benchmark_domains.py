"""Few-label domain suite (thin entry point; the code is benchmarks/domain_suite.py).
Run it with scripts/python.sh (the project venv, this checkout on PYTHONPATH):

    scripts/python.sh scripts/benchmark_domains.py --recipes legacy,plain_baseline,default \\
        --domains shapes,textures --labels 100
    scripts/python.sh scripts/benchmark_domains.py --report-only
"""

from __future__ import annotations

from benchmarks.domain_suite import main

if __name__ == "__main__":
    raise SystemExit(main())
