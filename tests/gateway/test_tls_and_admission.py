"""TLS and mTLS handshakes, plaintext refusal off loopback, and admission refusing bad models."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from airlock._cli import main
from airlock.errors import UsageError
from airlock.gateway import Gateway, TlsConfig, create_key, load_config, open_store
from tests.gateway import _models
from tests.gateway.conftest import Running, write_config

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
AFFINE = """
[models.affine]
path = "affine.onnx"
runtime = "onnx"
tenants = ["acme"]
"""


def _setup(
    folder: Path, extra: str = AFFINE, tenants: tuple[str, ...] = ("acme",)
) -> tuple[Path, dict[str, str]]:
    _models.affine(folder / "affine.onnx")
    path = write_config(folder, extra)
    store = open_store(load_config(path))
    tokens = {}
    for tenant in tenants:
        store.add_tenant(tenant, None)
        tokens[tenant] = create_key(store, tenant)[1]
    store.close()
    return path, tokens


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    assert (
        main(
            [
                "certs",
                "dev",
                "--out",
                str(out),
                "--host",
                "127.0.0.1",
                "--client",
                "acme",
                "--client",
                "globex",
            ]
        )
        == 0
    )
    assert (out / "server.key").stat().st_mode & 0o777 == 0o600
    return out


@pytest.fixture
def mtls_gateway(tmp_path: Path, certs: Path) -> Iterator[tuple[Running, dict[str, str]]]:
    tls = f'\n[tls]\ncert = "{certs / "server.pem"}"\nkey = "{certs / "server.key"}"\nclient_ca = "{certs / "ca.pem"}"\n'
    path, tokens = _setup(
        tmp_path, AFFINE.replace('["acme"]', '["acme", "globex"]') + tls, ("acme", "globex")
    )
    running = Running(Gateway(load_config(path)))
    try:
        yield running, tokens
    finally:
        running.stop()


def test_tls_handshake_and_no_plaintext_on_the_tls_port(tmp_path: Path, certs: Path) -> None:
    path, tokens = _setup(tmp_path)
    tls = TlsConfig(certs / "server.pem", certs / "server.key")
    running = Running(Gateway(load_config(path), tls=tls))
    try:
        url = f"https://127.0.0.1:{running.gateway.port}"
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with httpx.Client(
            verify=context, headers={"Authorization": f"Bearer {tokens['acme']}"}, timeout=10
        ) as client:
            response = client.post(f"{url}/v2/models/affine/infer", json=BODY)
        assert response.status_code == 200 and response.json()["outputs"][0]["shape"] == [1, 3]
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
            httpx.get(f"{url}/v2/health/live", timeout=5)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # plaintext HTTP to the TLS port
            httpx.get(f"http://127.0.0.1:{running.gateway.port}/v2/health/live", timeout=5)
    finally:
        running.stop()


def test_mtls_maps_the_client_certificate_to_its_tenant(
    mtls_gateway: tuple[Running, dict[str, str]], certs: Path
) -> None:
    running, tokens = mtls_gateway
    url = f"https://127.0.0.1:{running.gateway.port}/v2/models/affine/infer"

    def call(cert_tenant: str | None, key_tenant: str) -> int:
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        if cert_tenant is not None:
            context.load_cert_chain(certs / f"client-{cert_tenant}.pem", certs / f"client-{cert_tenant}.key")
        headers = {"Authorization": f"Bearer {tokens[key_tenant]}"}
        with httpx.Client(verify=context, headers=headers, timeout=10) as client:
            return client.post(url, json=BODY).status_code

    assert call("acme", "acme") == 200
    assert call("globex", "globex") == 200
    assert call("globex", "acme") == 401  # a certificate of one tenant with another tenant's key
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        call(None, "acme")  # no client certificate: the handshake fails


def test_plaintext_on_a_non_loopback_address_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _setup(tmp_path)
    config = load_config(path)
    import dataclasses

    public = dataclasses.replace(config, server=dataclasses.replace(config.server, host="0.0.0.0"))  # noqa: S104
    with pytest.raises(
        UsageError, match=r"refusing to serve plaintext HTTP on non-loopback address '0\.0\.0\.0'"
    ):
        Gateway(public)
    assert main(["serve", "--config", str(path), "--host", "192.0.2.1"]) == 2
    assert "refusing to serve plaintext HTTP on non-loopback address '192.0.2.1'" in capsys.readouterr().err


def test_a_malicious_model_is_refused_at_admission_with_its_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _models.malicious_pickle(tmp_path / "evil.pt")
    extra = AFFINE + '\n[models.evil]\npath = "evil.pt"\ntenants = ["acme"]\n'
    path, _ = _setup(tmp_path, extra)
    assert main(["serve", "--config", str(path), "--admit-only"]) == 1
    records = {r["model"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert records["affine"]["decision"] == "admitted"
    evil = records["evil"]
    assert evil["decision"] == "refused" and evil["verdict"] == "MALICIOUS"
    assert any(f["callable"] == "os.system" and f["severity"] == "MALICIOUS" for f in evil["findings"])
    # serving a config with a refused model fails closed, naming the finding; nothing is listening
    with pytest.raises(UsageError, match=r"(?s)evil: scan MALICIOUS.*GLOBAL imports os.system"):
        asyncio.run(Gateway(load_config(path)).start())
    assert not Path("/tmp/airlock-gateway-pwned").exists()


def test_a_digest_mismatch_is_refused_before_scanning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _setup(tmp_path, AFFINE + 'sha256 = "' + "0" * 64 + '"\n')
    assert main(["serve", "--config", str(path), "--admit-only"]) == 1
    (record,) = map(json.loads, capsys.readouterr().out.splitlines())
    assert record["decision"] == "refused" and record["verdict"] == "NOT SCANNED"
    assert record["reason"].startswith("integrity check failed: digest mismatch: expected sha256:000")
    good = record["digest"].removeprefix("sha256:")
    path.write_text(path.read_text().replace("0" * 64, good))
    assert main(["serve", "--config", str(path), "--admit-only"]) == 0
    assert json.loads(capsys.readouterr().out)["integrity"] == "sha256 digest"


def test_a_config_naming_an_unknown_tenant_is_refused(tmp_path: Path) -> None:
    path, _ = _setup(tmp_path, AFFINE.replace('["acme"]', '["acme", "ghost"]'))
    with pytest.raises(UsageError, match="config names unknown tenant"):
        asyncio.run(Gateway(load_config(path)).start())
