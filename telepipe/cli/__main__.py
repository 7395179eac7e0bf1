"""``python -m telepipe.cli ...`` (how a run starts its children): the ``telepipe`` command."""

import sys

from telepipe.cli import entry

sys.exit(entry())
