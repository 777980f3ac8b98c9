"""``airlock serve`` as operators run it: a subprocess, JSON logs, SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from airlock.gateway import create_key, load_config, open_store
from tests.gateway import _models
from tests.gateway.conftest import write_config


def test_serve_subprocess_answers_then_stops_on_sigterm(tmp_path: Path) -> None:
    _models.affine(tmp_path / "affine.onnx")
    path = write_config(
        tmp_path, '[models.affine]\npath = "affine.onnx"\nruntime = "onnx"\ntenants = ["acme"]\n'
    )
    store = open_store(load_config(path))
    store.add_tenant("acme", None)
    token = create_key(store, "acme")[1]
    store.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "airlock", "serve", "--config", str(path)],
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        listening = None
        for line in process.stderr:  # JSON lines; the "listening" one carries the bound ports
            entry = json.loads(line)
            if entry["message"] == "listening":
                listening = entry
                break
        assert listening is not None and listening["host"] == "127.0.0.1" and listening["tls"] is False
        response = httpx.post(
            f"http://127.0.0.1:{listening['port']}/v2/models/affine/infer",
            headers={"Authorization": f"Bearer {token}"},
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
            timeout=10,
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=30)[1]
        assert process.returncode == 0
        stopped = [json.loads(line) for line in rest.splitlines() if '"stopped"' in line]
        assert len(stopped) == 1 and len(stopped[0]["audit_head"]) == 64
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
