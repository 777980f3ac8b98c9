"""``airlock serve``: a multi-tenant KServe v2 gateway over sandboxed workers.

Public API (pinned by ``tests/gateway/test_public_api.py``)::

    load_config(path) -> GatewayConfig           strict TOML config (docs/serve.md)
    Gateway(config, ...)                         await start() / wait() / stop()
    open_store(config) -> Store                  the state backend (SQLite by default)
    create_key(store, tenant, scopes) -> (KeyRecord, token)
    verify_chain(rows, expect_head=...) -> AuditReport
    admit(model, staging) -> (AdmissionRecord, staged path | None)
    dev_certificates(out, hosts, tenants) -> DevCertificates

Every model is admitted (verify -> scan) before it is loaded, and runs only in a sandboxed worker
of its own per tenant. See docs/serve.md for the tenancy model, TLS, metrics and audit.
"""

from __future__ import annotations

from airlock.gateway._admission import admit
from airlock.gateway._audit import AuditReport, verify_chain
from airlock.gateway._config import (
    GatewayConfig,
    ModelConfig,
    ServerConfig,
    TenantLimits,
    TensorSpec,
    TlsConfig,
    load_config,
)
from airlock.gateway._keys import create_key
from airlock.gateway._server import Gateway, open_store
from airlock.gateway._store import AdmissionRecord, AuditRow, KeyRecord, Store, TenantRecord
from airlock.gateway._tls import DevCertificates, dev_certificates

__all__ = [
    "AdmissionRecord",
    "AuditReport",
    "AuditRow",
    "DevCertificates",
    "Gateway",
    "GatewayConfig",
    "KeyRecord",
    "ModelConfig",
    "ServerConfig",
    "Store",
    "TenantLimits",
    "TenantRecord",
    "TensorSpec",
    "TlsConfig",
    "admit",
    "create_key",
    "dev_certificates",
    "load_config",
    "open_store",
    "verify_chain",
]
