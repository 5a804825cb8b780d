"""``python -m scripts.lib.lslocal``: see scripts.lib.lslocal.cli."""

import sys

from scripts.lib.lslocal.cli import main

sys.exit(main())
