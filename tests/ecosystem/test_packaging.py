"""The package as a user gets it: wheel + sdist built, installed into clean venvs, used from there.

These tests build and install for real (the registry serves the dependencies; pip's cache makes
repeats fast). They are marked ``slow`` and bounded: each pip call has a timeout, and the [all]
venv reuses the locked versions (requirements/dev.lock as constraints) so pip resolves nothing new.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from airlock._cli import COMMANDS
from tests.fixtures.attacks import ATTACKS

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: one pytest-xdist process builds the wheel and the venvs (module fixtures) once for all of them
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]

#: Commands a core install runs; every other one must name its missing extra and exit 2.
CORE_COMMANDS = {"scan", "hash", "sign", "verify", "certs"}

_ARGS = {
    "load": ["load", "m.pkl"],
    "convert": ["convert", "m.pkl", "-o", "out.safetensors"],
    "run": ["run", "m.pkl"],
    "chat": ["chat", "m.gguf"],
    "doctor": ["doctor"],
    "serve": ["serve", "--config", "c.toml"],
    "tenant": ["tenant", "list", "--config", "c.toml"],
    "key": ["key", "list", "--config", "c.toml"],
    "audit": ["audit", "verify", "--config", "c.toml"],
    "guard": ["guard", "hello"],
    "probe": ["probe", "https://127.0.0.1:9/v1", "--model", "m"],
}


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=_clean_env()
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """wheel and sdist built from a copy of the source tree (no build caches, no .venv)."""
    src = tmp_path_factory.mktemp("src") / "airlock"
    ignore = shutil.ignore_patterns(".venv", "build", "dist", "*.egg-info", "__pycache__", ".git", "demo")
    shutil.copytree(ROOT, src, ignore=ignore, symlinks=True)
    out = tmp_path_factory.mktemp("dist")
    proc = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)], cwd=src)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Pattern" not in proc.stderr and "deprecat" not in proc.stderr.lower(), proc.stderr
    (wheel,) = out.glob("model_airlock-*.whl")
    (sdist,) = out.glob("model_airlock-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def _versions_of_the_lock(folder: Path) -> Path:
    """requirements/dev.lock as plain constraints (tools/lock_to_constraints.py, as the Dockerfile
    does): pip turns --require-hashes on for any hashed line, and the wheel under test has no hash."""
    made = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "lock_to_constraints.py"),
            str(ROOT / "requirements" / "dev.lock"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    path = folder / "constraints.txt"
    path.write_text(made.stdout)
    assert "torch==2.13.0" in made.stdout and "--hash" not in made.stdout
    return path


def _venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin"


def test_wheel_and_sdist_metadata(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = whl.read(meta_name).decode()
    assert "Name: model-airlock" in meta
    assert "License-Expression: Apache-2.0" in meta
    assert "Classifier: Topic :: Security" in meta
    assert "Project-URL: " in meta
    assert "Requires-Dist: jinja2<4,>=3.1.5" in meta
    requirements = [line.split(";")[0] for line in meta.splitlines() if line.startswith("Requires-Dist")]
    assert len(requirements) > 10
    assert not [r for r in requirements if "==" in r], "a library declares ranges, the lock pins"
    assert "airlock/docs/scan.md" in names  # what --help points to exists for pip users
    assert any(n.endswith("licenses/LICENSE") for n in names)
    with tarfile.open(dist["sdist"]) as sdist:
        members = {Path(*Path(m).parts[1:]).as_posix() for m in sdist.getnames()}
    assert {"LICENSE", "docs/scan.md", "requirements/dev.lock", "setup.py"} <= members


@pytest.fixture(scope="module")
def core(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    bin_dir = _venv(tmp_path_factory.mktemp("core") / "venv")
    proc = _run(
        [
            str(bin_dir / "pip"),
            "install",
            "--quiet",
            "-c",
            str(_versions_of_the_lock(bin_dir)),
            str(dist["wheel"]),
        ],
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return bin_dir


def _model(folder: Path) -> Path:
    attack = next(a for a in ATTACKS if a.id == "os-system")
    return attack.build(folder, folder / "pwned")


def test_core_install_scans_hashes_verifies(core: Path, tmp_path: Path) -> None:
    freeze = _run([str(core / "pip"), "freeze"], cwd=tmp_path).stdout.lower()
    for absent in ("numpy", "torch", "starlette", "onnx", "cyclonedx"):
        assert absent not in freeze
    bad = _model(tmp_path)
    airlock = str(core / "airlock")
    scan = _run([airlock, "scan", str(bad)], cwd=tmp_path)
    assert scan.returncode == 1 and "os.system" in scan.stdout, scan.stderr
    lock = _run(
        [airlock, "hash", str(tmp_path), "--format", "lock", "-o", str(tmp_path / "m.lock")], cwd=tmp_path
    )
    assert lock.returncode == 0, lock.stderr
    ok = _run(
        [airlock, "verify", str(tmp_path), "--lock", str(tmp_path / "m.lock"), "--unsafe-ignore", "m.lock"],
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    bad.write_bytes(bad.read_bytes() + b"x")
    changed = _run(
        [airlock, "verify", str(tmp_path), "--lock", str(tmp_path / "m.lock"), "--unsafe-ignore", "m.lock"],
        cwd=tmp_path,
    )
    assert changed.returncode == 1
    help_text = _run([airlock, "scan", "--help"], cwd=tmp_path).stdout
    found = re.search(r"installed in\s+(\S+)", help_text)
    assert found, help_text
    docs = found.group(1)
    assert (Path(docs) / "scan.md").is_file()
    assert not docs.startswith(str(ROOT))


def test_core_install_every_other_command_names_its_extra(core: Path, tmp_path: Path) -> None:
    assert set(_ARGS) | CORE_COMMANDS == {e.name for e in COMMANDS}
    for name, args in _ARGS.items():
        proc = _run([str(core / "airlock"), *args], cwd=tmp_path)
        assert proc.returncode == 2, (name, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        line = proc.stderr.strip()
        assert "\n" not in line, line
        assert "pip install 'model-airlock[" in line, line
    # the memorization audit runs the model in the sandbox through the text runtime: its own extras
    audit = _run(
        [str(core / "airlock"), "probe", "--memorization", "m.gguf", "--records", "r.json"], cwd=tmp_path
    )
    assert audit.returncode == 2 and "Traceback" not in audit.stderr, audit.stderr
    assert "airlock probe --memorization: " in audit.stderr and "pip install 'model-airlock[" in audit.stderr
    certs = _run([str(core / "airlock"), "certs", "dev", "--out", str(tmp_path / "certs")], cwd=tmp_path)
    assert certs.returncode == 0, certs.stderr
    blake = _run(
        [str(core / "airlock"), "hash", "--algorithm", "blake3", str(tmp_path / "certs")], cwd=tmp_path
    )
    assert blake.returncode == 2 and "model-airlock[integrity]" in blake.stderr
    sbom = _run(
        [str(core / "airlock"), "scan", str(tmp_path / "certs"), "--format", "cyclonedx"], cwd=tmp_path
    )
    assert sbom.returncode == 2 and "model-airlock[sbom]" in sbom.stderr


def test_action_shell_steps_run(core: Path, tmp_path: Path, dist: dict[str, Path]) -> None:
    """The Action's own bash steps, as the runner would run them (inputs as environment variables)."""
    import yaml

    action = yaml.safe_load((ROOT / "action.yml").read_text())
    steps = {s.get("name"): s for s in action["runs"]["steps"]}
    workspace = tmp_path / "ws"
    (workspace / "models").mkdir(parents=True)
    _model(workspace / "models")
    output = tmp_path / "github_output"
    output.touch()
    env = _clean_env()
    env["PATH"] = f"{core}{os.pathsep}{env['PATH']}"
    env["GITHUB_OUTPUT"] = str(output)

    def step(name: str, inputs: dict[str, str]) -> subprocess.CompletedProcess[str]:
        spec = steps[name]
        assert spec["shell"] == "bash"
        assert "${{" not in spec["run"], "inputs must reach the script through env only"
        step_env = dict(env)
        for key, expr in spec.get("env", {}).items():
            source = expr.removeprefix("${{ ").removesuffix(" }}")
            step_env[key] = inputs[source]
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", spec["run"]],  # as GitHub runs it
            cwd=workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    inputs = {
        "inputs.version": "0.1.0",
        "inputs.package": str(dist["wheel"]),
        "inputs.path": "models",
        "inputs.sarif-file": "airlock.sarif",
        "inputs.fail-on": "any",
    }
    installed = step("Install airlock", inputs)
    assert installed.returncode == 0, installed.stderr
    assert "airlock 0.1.0" in installed.stdout
    scanned = step("Scan", inputs)
    assert scanned.returncode == 0, scanned.stderr
    assert "exit-code=1" in output.read_text()
    sarif = json.loads((workspace / "airlock.sarif").read_text())
    uri = sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "models/os_system.pkl"
    inputs["steps.scan.outputs.exit-code"] = "1"
    gate = step("Gate", inputs)
    assert gate.returncode == 1
    assert "::error::" in gate.stdout
    inputs["steps.scan.outputs.exit-code"] = "3"
    inputs["inputs.fail-on"] = "malicious"
    assert step("Gate", inputs).returncode == 0


@pytest.mark.parametrize("end", ["low", "high"])
def test_declared_ranges_resolve_at_both_ends(dist: dict[str, Path], tmp_path: Path, end: str) -> None:
    """pip resolves the wheel with the lowest and with the highest allowed version of each runtime
    dependency (metadata only: --dry-run, binary wheels)."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    pins = []
    for text in PYPROJECT["project"]["dependencies"]:
        req = Requirement(text)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        highs = [s.version for s in req.specifier if s.operator == "<"]
        assert lows and highs, f"{text}: declare a range with both ends"
        pins.append(f"{req.name}=={lows[0]}" if end == "low" else f"{req.name}<{highs[0]}")
    target = tmp_path / "t"
    proc = _run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary", ":all:",
         "--target", str(target), "--report", str(tmp_path / "r.json"), str(dist["wheel"]), *pins],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
    for pin in pins:
        name = pin.split("=")[0].split("<")[0].lower()
        assert name in chosen
        if end == "low":
            assert Version(chosen[name]) == Version(pin.split("==")[1])


def test_all_extra_install_runs_every_command_past_the_extra_check(
    dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """[all] from the wheel, with the locked versions as constraints: no command names a missing extra."""
    bin_dir = _venv(tmp_path_factory.mktemp("all") / "venv")
    proc = _run(
        [str(bin_dir / "pip"), "install", "--quiet", "--no-compile", "-c", str(_versions_of_the_lock(bin_dir)),
         f"{dist['wheel']}[all]"],
        cwd=ROOT,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    work = tmp_path_factory.mktemp("allwork")
    for name, args in _ARGS.items():
        result = _run([str(bin_dir / "airlock"), *args], cwd=work, timeout=120)
        assert "model-airlock[" not in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr, (name, result.stderr)
    bad = _model(work)
    sbom = _run([str(bin_dir / "airlock"), "scan", str(bad), "--format", "cyclonedx"], cwd=work)
    assert sbom.returncode == 1 and json.loads(sbom.stdout)["bomFormat"] == "CycloneDX"


def test_release_procedure_sbom_sign_verify(dist: dict[str, Path], tmp_path: Path) -> None:
    """docs/release.md steps 2-4 on the built artifacts: SBOM, airlock sign, airlock verify and
    model_signing verify; a swapped wheel fails both."""
    pytest.importorskip("model_signing")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    release = tmp_path / "dist"
    release.mkdir()
    for artifact in dist.values():
        shutil.copyfile(artifact, release / artifact.name)
    sbom_path = release / "model-airlock-0.1.0.cdx.json"
    made = _run(
        [sys.executable, str(ROOT / "tools" / "release_sbom.py"), str(release), str(ROOT / "requirements" / "dev.lock"), str(sbom_path)],
        cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    sbom = json.loads(sbom_path.read_text())
    assert sbom["metadata"]["component"]["purl"] == "pkg:pypi/model-airlock@0.1.0"
    names = {c["name"] for c in sbom["components"]}
    assert {dist["wheel"].name, dist["sdist"].name, "jinja2", "cryptography"} <= names

    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = tmp_path / "release.key", tmp_path / "release.pub"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    sig = tmp_path / "model-airlock-0.1.0.sig"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    def airlock(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "airlock", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )

    def reference(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "model_signing", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert airlock("sign", str(release), "--key", str(priv), "-o", str(sig)).returncode == 0
    assert airlock("verify", str(release), "--signature", str(sig), "--key", str(pub)).returncode == 0
    ok = reference("verify", "key", str(release), "--signature", str(sig), "--public_key", str(pub))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wheel = release / dist["wheel"].name
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    assert airlock("verify", str(release), "--signature", str(sig), "--key", str(pub)).returncode == 1
    assert (
        reference("verify", "key", str(release), "--signature", str(sig), "--public_key", str(pub)).returncode
        != 0
    )
