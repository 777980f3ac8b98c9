"""``python -m airlock``."""

from airlock._cli import entry_point

entry_point()
