"""``python -m airlock.probe.memorization ARGS``: the audit's command line until ``airlock probe
--memorization`` is wired to :func:`airlock.probe.memorization.main`."""

import sys

from airlock.probe.memorization._cli import main

sys.exit(main())
