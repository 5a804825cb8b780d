"""``python -m tests.lslocal``: see tests.lslocal.cli."""

import sys

from tests.lslocal.cli import main

sys.exit(main())
