"""airlock guard: checks on untrusted text before it reaches a model (prompt-injection detection)."""

from __future__ import annotations

from airlock.guard._injection import Detector, InjectionScore, detector

__all__ = ["Detector", "InjectionScore", "detector"]
