from __future__ import annotations

import airlock.sandbox


def test_public_names_are_pinned() -> None:
    assert sorted(airlock.sandbox.__all__) == [
        "DEFAULT_SANDBOX_LIMITS", "DoctorReport", "GatedModel", "LayerStatus", "LoadInfo", "Sandbox",
        "SandboxLevel", "SandboxLimits", "SandboxPolicy", "Worker", "doctor", "gate", "load_state_dict",
    ]  # fmt: skip
    for name in airlock.sandbox.__all__:
        assert hasattr(airlock.sandbox, name)
