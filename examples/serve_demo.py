"""The second half of ``make demo``: admit models, refuse the malicious one, serve, call with a key.

Builds, under DEST/serve/: a small ONNX model (y = x @ W + b) and a malicious pickle; development
TLS certificates; a gateway config naming both models for tenant ``acme``. Then, each step through
the ``airlock`` command line:

1. ``airlock serve --admit-only`` refuses the malicious model (exit 1, its finding named);
2. with that model removed from the config, ``airlock tenant add`` and ``airlock key create``;
3. ``airlock serve`` over TLS on 127.0.0.1 (a free port), one inference call with the key, one
   without (401);
4. the server is stopped and ``airlock audit verify`` checks the audit log's hash chain.

Usage: python examples/serve_demo.py DEST
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from onnx import TensorProto, helper, numpy_helper

AIRLOCK = [sys.executable, "-m", "airlock"]


def affine(path: Path) -> None:
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    b = np.array([1.0, -1.0, 0.5], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def step(title: str, argv: list[str], expect: int) -> str:
    print(f"\n$ airlock {' '.join(argv[len(AIRLOCK) :])}    # {title}")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    print((proc.stdout + proc.stderr).rstrip())
    if proc.returncode != expect:
        sys.exit(f"demo: expected exit code {expect}, got {proc.returncode}")
    return proc.stdout


def config(folder: Path, with_evil: bool) -> Path:
    text = """
[server]
host = "127.0.0.1"
port = 0
admin_port = 0
state = "state.db"

[tls]
cert = "certs/server.pem"
key = "certs/server.key"

[models.affine]
path = "affine.onnx"
runtime = "onnx"
tenants = ["acme"]
inputs = [{ name = "x", datatype = "FP32", shape = [-1, 4] }]
"""
    if with_evil:
        text += '\n[models.evil]\npath = "evil.pkl"\ntenants = ["acme"]\n'
    path = folder / "serve.toml"
    path.write_text(text)
    return path


def main(dest: Path) -> None:
    folder = (dest / "serve").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    marker = dest.resolve() / "PWNED"
    affine(folder / "affine.onnx")
    (folder / "evil.pkl").write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    step("a development CA and server certificate", [*AIRLOCK, "certs", "dev", "--out", str(folder / "certs"),
         "--host", "127.0.0.1"], 0)  # fmt: skip
    cfg = config(folder, with_evil=True)
    step(
        "admission: the malicious model is refused",
        [*AIRLOCK, "serve", "--config", str(cfg), "--admit-only"],
        1,
    )
    cfg = config(folder, with_evil=False)
    step("a tenant", [*AIRLOCK, "tenant", "add", "acme", "--config", str(cfg)], 0)
    token = step(
        "a key, shown once", [*AIRLOCK, "key", "create", "--tenant", "acme", "--config", str(cfg)], 0
    )
    token = token.strip().splitlines()[-1]
    print("\n$ airlock serve --config serve.toml &    # TLS on 127.0.0.1, a free port")
    server = subprocess.Popen(
        [*AIRLOCK, "serve", "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        port = None
        assert server.stderr is not None
        for line in server.stderr:  # JSON log lines; "listening" carries the bound port
            entry = json.loads(line)
            if entry.get("message") == "listening":
                port = entry["port"]
                break
        if port is None:
            sys.exit("demo: the gateway did not start")
        url = f"https://127.0.0.1:{port}/v2/models/affine/infer"
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        with httpx.Client(verify=str(folder / "certs" / "ca.pem"), timeout=60) as client:
            answer = client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
            print(f"POST {url} with the key -> {answer.status_code} {answer.json()['outputs'][0]['data']}")
            refused = client.post(url, json=body)
            print(f"POST {url} without a key -> {refused.status_code} {refused.json()}")
        if answer.status_code != 200 or refused.status_code != 401:
            sys.exit("demo: unexpected answers from the gateway")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    step("the audit log's hash chain", [*AIRLOCK, "audit", "verify", "--config", str(cfg)], 0)
    if marker.exists():
        sys.exit(f"demo: {marker} exists: a payload ran")
    print(f"\n{marker} does not exist: the malicious model was refused and never ran")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(Path(sys.argv[1]))
