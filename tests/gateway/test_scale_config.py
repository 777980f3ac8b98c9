"""[state] and [limits] in the serve config, and the scale extra."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.errors import UsageError
from airlock.gateway import load_config
from airlock.gateway._backend import BackendConfig, read_password, redact, warn_unauthenticated
from tests.ecosystem.test_cli_shell import _without


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(f'[server]\nstate = "s.db"\n{text}', encoding="utf-8")
    return path


def test_backend_config(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, '[state]\nurl = "postgresql://u@db:5432/air"\n'
                                           'password_file = "pg.pw"\nsslmode = "verify-full"\nca_file = "/ca.pem"\n'
                                           '[limits]\nurl = "rediss://cache:6380/0"\ntimeout_seconds = 0.5\n'))  # fmt: skip
    assert config.state_backend == BackendConfig(
        "postgresql://u@db:5432/air", tmp_path / "pg.pw", Path("/ca.pem"), "verify-full", 2.0, 5.0
    )
    assert config.limits_backend is not None and config.limits_backend.timeout_seconds == 0.5
    assert load_config(_config(tmp_path, "")).state_backend is None  # SQLite, in process: the default
    for text, message in [
        (
            '[state]\nurl = "postgresql://u:hunter2@db/air"\n',
            r"holds a password \(postgresql://u:\*\*\*@db/air\)",
        ),
        ('[limits]\nurl = "redis://:hunter2@cache"\n', "put it in limits.password_file"),
        ('[state]\nurl = "redis://cache"\n', "state.url must start with postgres or postgresql://"),
        ('[limits]\nurl = "postgresql://db"\n', "limits.url must start with redis or rediss://"),
        ('[limits]\nurl = "redis://cache"\nsslmode = "require"\n', r"\[state\] only"),
        ('[state]\nurl = "postgresql://db"\nsslmode = "sometimes"\n', "sslmode must be one of"),
        (
            '[state]\nurl = "postgresql://db"\npasword_file = "x"\n',
            r"unknown key\(s\) in \[state\]: pasword_file",
        ),
        ('[state]\npassword_file = "x"\n', r"\[state\] needs url"),
        ('[limits]\nurl = "redis://cache"\ntimeout_seconds = 0\n', "limits.timeout_seconds must be"),
        ('[limits]\nurl = "redis://cache"\nnamespace = "a:b"\n', "limits.namespace must be"),
        ('[state]\nurl = "postgresql://db"\nnamespace = "a"\n', r"\[limits\] only"),
    ]:
        with pytest.raises(UsageError, match=message) as caught:
            load_config(_config(tmp_path, text))
        assert "hunter2" not in str(caught.value)
    assert (
        redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"
        and redact("postgresql://h/db") == "postgresql://h/db"
    )


@pytest.mark.parametrize(("table", "hidden"), [("state", "psycopg"), ("limits", "redis")])
def test_a_server_url_without_the_scale_extra_names_it(tmp_path: Path, table: str, hidden: str) -> None:
    url = "postgresql://db/air" if table == "state" else "redis://cache"
    (tmp_path / "c.toml").write_text(f'[{table}]\nurl = "{url}"\n', encoding="utf-8")
    args = ["tenant", "list", "--config", "c.toml"] if table == "state" else ["serve", "--config", "c.toml"]
    proc = _without([hidden], args, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"airlock {args[0]}: needs the 'scale' extra, not installed: pip install 'model-airlock[scale]'"
    )


def test_password_files(tmp_path: Path) -> None:
    path = tmp_path / "pw"

    def read() -> str | None:
        return read_password(BackendConfig("redis://cache", path))

    path.write_bytes(b"p\xc3\xa4ss word\n")
    assert read() == "päss word" and read_password(BackendConfig("redis://cache")) is None
    path.write_bytes(b"x" * 4096)
    assert read() == "x" * 4096
    for content, message in [(b"x" * 4097, "larger than 4096 bytes"), (b"\xff\xfe", "not UTF-8")]:
        path.write_bytes(content)
        with pytest.raises(UsageError, match=message):
            read()
    path.unlink()
    with pytest.raises(UsageError, match="cannot read the password file"):
        read()


@pytest.mark.parametrize(
    ("table", "url"),
    [
        ("state", "postgresql://airlock@127.0.0.1:9/db?password=SECRETpwMARKER"),  # libpq reads it
        ("state", "postgresql://airlock@127.0.0.1:9/db?sslmode=disable&x=SECRETpwMARKER"),
        ("limits", "redis://127.0.0.1:9/0?password=SECRETpwMARKER"),  # redis-py: over password_file
        ("limits", "rediss://127.0.0.1:9/0?ssl_cert_reqs=none&p=SECRETpwMARKER"),  # TLS check undone
        ("limits", "redis://127.0.0.1:9/0#SECRETpwMARKER"),
    ],
)
def test_a_url_query_is_refused_and_never_shown(tmp_path: Path, table: str, url: str) -> None:
    """Both clients take settings from the URL's query, and redis-py lets them override its keyword
    arguments: a password there slipped past the no-password-in-the-URL check and was printed in
    'cannot reach PostgreSQL at …' (and the log); ``ssl_cert_reqs=none`` silently undid ca_file."""
    (tmp_path / "c.toml").write_text(
        f'[server]\nstate = "s.db"\n[{table}]\nurl = "{url}"\n', encoding="utf-8"
    )
    args = ["tenant", "list"] if table == "state" else ["serve"]
    proc = subprocess.run(
        [sys.executable, "-m", "airlock", *args, "--config", "c.toml"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"config: {table}.url must not carry a query or fragment" in proc.stderr
    assert "SECRETpwMARKER" not in proc.stdout + proc.stderr
    assert redact(url).count("***") == 1 and "SECRETpwMARKER" not in redact(url)


def test_a_ca_file_is_used_or_refused(tmp_path: Path) -> None:
    """libpq ignores sslrootcert under its default sslmode "prefer" (and falls back to plaintext):
    a ca_file without sslmode verifies the server (verify-full); with an sslmode that never checks a
    certificate it is refused rather than silently unused."""
    head = '[state]\nurl = "postgresql://u@db/air"\nca_file = "/ca.pem"\n'
    state = load_config(_config(tmp_path, head)).state_backend
    assert state is not None and state.sslmode == "verify-full"
    for mode in ("verify-ca", "verify-full", "require"):  # require with a root certificate: verify-ca
        state = load_config(_config(tmp_path, head + f'sslmode = "{mode}"\n')).state_backend
        assert state is not None and state.sslmode == mode
    for mode in ("disable", "allow", "prefer"):
        with pytest.raises(UsageError, match=f'state.ca_file is never used with sslmode = "{mode}"'):
            load_config(_config(tmp_path, head + f'sslmode = "{mode}"\n'))
    plain = load_config(_config(tmp_path, '[state]\nurl = "postgresql://u@db/air"\n')).state_backend
    assert plain is not None and plain.sslmode is None  # no ca_file: libpq's default, as documented


def test_names_with_a_final_newline_are_refused(tmp_path: Path) -> None:
    """Tenant names become Redis keys (``<namespace>:<tenant>:<budget>``) and rows in PostgreSQL;
    the pattern's ``$`` also matched before a final newline, so ``airlock tenant add 'acme\\n'``
    made a second tenant shown as "acme" (and a key under a namespace with a newline)."""
    (tmp_path / "c.toml").write_text('[server]\nstate = "s.db"\n', encoding="utf-8")
    for name in ("acme\n", "acme\r", "acme\n\n"):
        proc = subprocess.run(
            [sys.executable, "-m", "airlock", "tenant", "add", name, "--config", "c.toml"],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 2 and "must be 1-63 characters" in proc.stderr, proc.stdout
    with pytest.raises(UsageError, match=r"limits\.namespace must be"):
        load_config(_config(tmp_path, '[limits]\nurl = "redis://cache"\nnamespace = "airlock\\n"\n'))
    assert load_config(_config(tmp_path, '[limits]\nurl = "redis://cache"\nnamespace = "a.b-c_9"\n'))


def test_a_server_off_this_machine_without_verified_tls_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    """libpq's default sslmode ("prefer") and redis:// do not authenticate the server: anyone on the
    path can answer as PostgreSQL (keys it never issued) or Redis (every budget lifted). Allowed
    (a private network may be trusted), but reported at start, never silently."""
    pg = "postgresql://u@db.internal/air"
    cases = [
        ("state", BackendConfig(pg), False, True),
        ("state", BackendConfig(pg, sslmode="require"), False, True),  # encrypted, server unchecked
        ("state", BackendConfig(pg, sslmode="verify-full"), True, False),
        ("state", BackendConfig("postgresql://u@127.0.0.1/air"), False, False),  # loopback
        ("state", BackendConfig("postgresql://u@[::1]/air"), False, False),
        ("state", BackendConfig("postgresql://u@localhost/air"), False, False),
        ("state", BackendConfig("postgresql://u@%2Frun%2Fpostgresql/air"), False, False),  # a socket
        ("state", BackendConfig("postgresql://u@127.0.0.1.evil.example/air"), False, True),  # a name
        ("limits", BackendConfig("redis://10.0.0.7:6379/0"), False, True),
        ("limits", BackendConfig("rediss://10.0.0.7:6380/0"), True, False),
    ]
    for what, config, verified, warned in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="airlock.gateway"):
            message = warn_unauthenticated(what, config, verified=verified, advice="fix it")
        assert (message is not None) == warned, (what, config.url)
        assert [r.getMessage() for r in caplog.records] == ([message] if warned else [])
        if message is not None:
            assert "not authenticated by TLS" in message and message.endswith("fix it")
