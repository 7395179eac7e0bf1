"""``python -m telepipe ...``: the same as the ``telepipe`` command."""

import sys

from telepipe.cli import main

sys.exit(main())
