"""``python -m airlock.probe.memorization ARGS``: the same command line as ``airlock probe
--memorization ARGS``."""

import sys

from airlock.probe.memorization._cli import main

sys.exit(main())
