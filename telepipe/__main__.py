"""``python -m telepipe ...``: the same as the ``telepipe`` command."""

import sys

from telepipe.cli import entry

sys.exit(entry())
