"""Load and run models you do not trust inside an OS sandbox (``airlock run``, ``airlock doctor``).

Public API (pinned by ``tests/sandbox/test_public_api.py``)::

    load_state_dict(path) -> dict[str, numpy.ndarray]   gate (verify, scan: only CLEAN), then load in the sandbox
    gate(path, ...) -> GatedModel                          open once, sealed private copy, verify, scan
    Worker(path | GatedModel, ...)                         a loaded model for repeated inference
    Sandbox(policy, runtimes)                              a warm worker that forks one job per model
    doctor(policy) -> DoctorReport                         which layers are active on this host

See docs/sandbox.md for the layers, what each blocks, and the limits of the threat model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airlock._lazy import lazy_exports

if TYPE_CHECKING:
    from airlock.sandbox._gate import GatedModel, gate
    from airlock.sandbox._layers import DoctorReport, LayerStatus, doctor
    from airlock.sandbox._policy import DEFAULT_SANDBOX_LIMITS, SandboxLevel, SandboxLimits, SandboxPolicy
    from airlock.sandbox._worker import LoadInfo, Sandbox, Worker, load_state_dict

#: Each public name and the submodule it lives in, imported on first access (airlock._lazy).
_EXPORTS = {
    "GatedModel": "airlock.sandbox._gate",
    "gate": "airlock.sandbox._gate",
    "DoctorReport": "airlock.sandbox._layers",
    "LayerStatus": "airlock.sandbox._layers",
    "doctor": "airlock.sandbox._layers",
    "DEFAULT_SANDBOX_LIMITS": "airlock.sandbox._policy",
    "SandboxLevel": "airlock.sandbox._policy",
    "SandboxLimits": "airlock.sandbox._policy",
    "SandboxPolicy": "airlock.sandbox._policy",
    "LoadInfo": "airlock.sandbox._worker",
    "Sandbox": "airlock.sandbox._worker",
    "Worker": "airlock.sandbox._worker",
    "load_state_dict": "airlock.sandbox._worker",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DEFAULT_SANDBOX_LIMITS",
    "DoctorReport",
    "GatedModel",
    "LayerStatus",
    "LoadInfo",
    "Sandbox",
    "SandboxLevel",
    "SandboxLimits",
    "SandboxPolicy",
    "Worker",
    "doctor",
    "gate",
    "load_state_dict",
]
