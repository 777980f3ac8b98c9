"""Build the demo folder for ``make demo``: ordinary model files and malicious ones, made in code.

The malicious files carry a harmless payload: if anything ever loaded them with a real
unpickler, a file named PWNED would appear in the demo folder. ``make demo`` scans the folder
and then checks that PWNED does not exist.

Usage: python examples/make_demo.py DEST
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import joblib
import numpy as np
import torch
from safetensors.numpy import save_file
from sklearn.linear_model import LogisticRegression


class _Payload:
    """Pickles to ``os.system('touch <marker>')``. Only ever pickled here, never unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def build(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    ordinary = dest / "ordinary-model"
    malicious = dest / "malicious-model"
    ordinary.mkdir(parents=True)
    malicious.mkdir(parents=True)
    marker = dest.resolve() / "PWNED"

    # An ordinary Hugging Face-style folder.
    state = {
        "embed.weight": torch.randn(16, 8),
        "head.weight": torch.randn(4, 8),
        "head.bias": torch.zeros(4),
    }
    torch.save(state, ordinary / "pytorch_model.bin")
    save_file({k: v.numpy() for k, v in state.items()}, str(ordinary / "model.safetensors"))
    (ordinary / "config.json").write_text(json.dumps({"model_type": "demo", "hidden_size": 8}, indent=2))
    x = np.random.RandomState(0).rand(20, 3)
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), ordinary / "classifier.joblib")

    # A malicious one: the same layout, with payloads where loaders run code.
    torch.save({"weight": torch.randn(2, 2), "config": _Payload(marker)}, malicious / "pytorch_model.bin")
    (malicious / "config.json").write_text(json.dumps({"model_type": "demo"}))
    import pickle

    (malicious / "optimizer.dat").write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    print(f"demo folder written to {dest}")
    print(f"if any payload ever ran, {marker} would exist")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(Path(sys.argv[1]))
