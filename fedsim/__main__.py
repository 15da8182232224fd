"""``python -m fedsim``: the same as the ``fedsim`` console script."""

import sys

from fedsim.cli import main

sys.exit(main())
