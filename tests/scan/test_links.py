"""Links inside a model folder: the loader opens a link by its name and reads its target.

A folder may hold ``config.json -> notes.txt``: transformers opens ``config.json`` (following the
link) and honours its ``auto_map``, ``torch.load`` opens ``pytorch_model.bin -> notes.txt``. The
scan listed the link as "target scanned in place" and judged the target by its own name (a
``.txt``: skipped as not a model file), so remote code and pickles ran while the verdict was
CLEAN, exit 0. The target is now judged under the names the links give it, and the Hugging Face
folder check reads a link to a file inside the folder as the file the loader sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import airlock
from airlock import Severity, Verdict
from airlock._render.text import render as render_text
from tests.formats_hf.test_hf_folder import _save_pretrained


def _loader(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)  # fmt: skip


def test_a_config_reached_through_a_link_is_analysed_under_the_links_name(tmp_path: Path) -> None:
    """Only config.json (a link), the code it names and weights: the scan said CLEAN, exit 0."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    model = tmp_path / "model"
    model.mkdir()
    marker = tmp_path / "pwned"
    config = LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2).to_dict()
    config["auto_map"] = {"AutoConfig": "configuration_tiny.TinyConfig"}
    (model / "settings.txt").write_text(json.dumps(config))
    (model / "config.json").symlink_to("settings.txt")
    (model / "configuration_tiny.py").write_text(
        f"import os\nos.system('touch {marker}')\n"
        "from transformers import LlamaConfig\n\nclass TinyConfig(LlamaConfig):\n    pass\n"
    )
    save_file({"w": torch.zeros(2)}, str(model / "model.safetensors"))
    done = _loader(
        "import sys\nfrom transformers import AutoConfig\n"
        "AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)\n",
        str(model),
    )
    assert marker.exists(), done.stderr[-3000:]  # transformers followed the link and ran the code
    marker.unlink()
    report = airlock.scan(model)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    by_name = {Path(f.path).name: f for f in report.files}
    remote = [f for f in by_name["config.json"].findings if f.rule == "hf.remote-code"]
    assert [f.callable for f in remote] == ["configuration_tiny.TinyConfig"], remote
    code = by_name["configuration_tiny.py"]
    assert any(f.severity is Severity.MALICIOUS and f.callable == "os.system" for f in code.findings)


def test_a_pickle_behind_a_model_file_name_is_not_skipped(tmp_path: Path) -> None:
    """Content no reader knows, under a model file name, is an ERROR; reached through a link with
    a model file name it was skipped (judged by the target's ``.txt`` name)."""
    model = _save_pretrained(tmp_path / "model")
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}".encode()
    # protocol-4 opcodes without a PROTO header: pickle.load (and torch's legacy reader) run it
    payload = b"\x8c\x05posix\x8c\x06system\x93\x8c" + bytes([len(cmd)]) + cmd + b"\x85R."
    (model / "notes.txt").write_bytes(payload)
    (model / "pytorch_model.bin").symlink_to("notes.txt")
    done = _loader(
        "import sys, torch\ntorch.load(sys.argv[1], weights_only=False)\n", str(model / "pytorch_model.bin")
    )
    assert marker.exists(), done.stderr[-3000:]
    marker.unlink()
    report = airlock.scan(model)
    assert report.verdict is not Verdict.CLEAN, render_text(report)
    (notes,) = [f for f in report.files if f.path.endswith("notes.txt")]
    assert notes.verdict in (Verdict.ERROR, Verdict.MALICIOUS), notes
    # without the link the same bytes under their own name are still what pickle.load would run:
    # sniffed by the unpickler's rules, whatever the name, and named
    (model / "pytorch_model.bin").unlink()
    alone = airlock.scan(model)
    assert alone.verdict is Verdict.MALICIOUS, render_text(alone)
    assert any(f.callable == "posix.system" for f in alone.findings()), render_text(alone)


def test_ordinary_links_inside_a_folder_stay_clean(tmp_path: Path) -> None:
    model = _save_pretrained(tmp_path / "model")
    (model / "tokenizer.json").rename(model / "tok.json")
    (model / "tokenizer.json").symlink_to("tok.json")
    (model / "LICENSE").write_text("MIT\n")
    (model / "LICENSE.txt").symlink_to("LICENSE")
    done = _loader(
        "import sys\nfrom transformers import AutoTokenizer\nAutoTokenizer.from_pretrained(sys.argv[1])\n",
        str(model),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = airlock.scan(model)
    assert report.verdict is Verdict.CLEAN, render_text(report)


def test_code_in_a_deep_folder_that_a_link_names_custom_generate_is_analysed(tmp_path: Path) -> None:
    """``custom_generate -> deep/er``: ``generate(custom_generate=folder, trust_remote_code=True)``
    imports ``custom_generate/generate.py``; the file lay two folders below the model, where ``.py``
    files were not analysed (only a folder or its parent counted as a Hugging Face folder)."""
    model = _save_pretrained(tmp_path / "model")
    marker = tmp_path / "pwned"
    (model / "deep" / "er").mkdir(parents=True)
    (model / "deep" / "er" / "generate.py").write_text(
        f"import os\nos.system('touch {marker}')\n\ndef generate(model, *args, **kwargs):\n    return None\n"
    )
    (model / "custom_generate").symlink_to("deep/er")
    done = _loader(
        "import sys, torch\nfrom transformers import AutoModelForCausalLM\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "m.generate(torch.tensor([[1, 2]]), custom_generate=sys.argv[1], trust_remote_code=True, max_new_tokens=2)\n",
        str(model),
    )
    assert marker.exists(), done.stderr[-3000:]
    marker.unlink()
    report = airlock.scan(model)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    (code,) = [f for f in report.files if f.path.endswith("deep/er/generate.py")]
    assert any(f.rule == "hf.remote-code" and f.callable == "os.system" for f in code.findings), code
