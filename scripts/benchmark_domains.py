"""Few-label domain suite (thin entry point; the code is benchmarks/domain_suite.py).

    python scripts/benchmark_domains.py --recipes legacy,plain_baseline,default --domains shapes,textures --labels 100
    python scripts/benchmark_domains.py --report-only
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.domain_suite import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
