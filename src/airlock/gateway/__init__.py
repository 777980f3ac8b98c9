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

from typing import TYPE_CHECKING

from airlock._lazy import lazy_exports

if TYPE_CHECKING:
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

#: Each public name and the submodule it lives in, imported on first access (airlock._lazy).
_EXPORTS = {
    "admit": "airlock.gateway._admission",
    "AuditReport": "airlock.gateway._audit",
    "verify_chain": "airlock.gateway._audit",
    "GatewayConfig": "airlock.gateway._config",
    "ModelConfig": "airlock.gateway._config",
    "ServerConfig": "airlock.gateway._config",
    "TenantLimits": "airlock.gateway._config",
    "TensorSpec": "airlock.gateway._config",
    "TlsConfig": "airlock.gateway._config",
    "load_config": "airlock.gateway._config",
    "create_key": "airlock.gateway._keys",
    "Gateway": "airlock.gateway._server",
    "open_store": "airlock.gateway._server",
    "AdmissionRecord": "airlock.gateway._store",
    "AuditRow": "airlock.gateway._store",
    "KeyRecord": "airlock.gateway._store",
    "Store": "airlock.gateway._store",
    "TenantRecord": "airlock.gateway._store",
    "DevCertificates": "airlock.gateway._tls",
    "dev_certificates": "airlock.gateway._tls",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

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
