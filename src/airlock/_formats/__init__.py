"""Bounded readers: bytes in, neutral facts out. They know nothing of policy (see ``base``)."""
