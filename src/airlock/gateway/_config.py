"""The gateway's configuration: one TOML file named on the command line, parsed once, strictly.

Unknown keys, wrong types and out-of-range values are a :class:`UsageError` naming the key: a typo
must never silently fall back to a default. Relative paths are resolved against the folder of the
config file (never the current directory). Nothing here is read from a model or from the environment.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from airlock.errors import UsageError
from airlock.gateway._backend import BackendConfig, parse_backend
from airlock.gateway._guard_policy import GuardPolicy, guard_policy
from airlock.sandbox import SandboxLimits
from airlock.sandbox._policy import MAX_GPU_INDEX

__all__ = [
    "LIMIT_FIELDS",
    "MAX_CONTEXT",
    "AuditConfig",
    "GatewayConfig",
    "ModelConfig",
    "ServerConfig",
    "TenantLimits",
    "TensorSpec",
    "TlsConfig",
    "load_config",
]

_NAME: Final = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,62}\Z")  # \Z: "$" let a final newline through
#: KServe v2 datatypes the gateway accepts and their numpy dtype strings (little endian)
DATATYPES: Final[Mapping[str, str]] = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    # text and byte strings: numpy object arrays of ``bytes`` (see ._bytes)
    "BYTES": "|O",
}


def check_name(kind: str, name: object) -> str:
    """Tenant and model names: lower-case letters, digits, ``_ . -``; 1..63 characters."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(
            f"{kind} name {name!r} must be 1-63 characters of a-z, 0-9, '_', '.', '-' starting with a letter or digit"
        )
    return name


#: the per-tenant limits, in the order they are stored
LIMIT_FIELDS: Final = (
    "requests_per_minute", "tensor_bytes_per_minute", "max_concurrent", "tokens_per_minute", "max_generations",
)  # fmt: skip


@dataclass(frozen=True)
class TenantLimits:
    """Per-tenant budgets: token buckets refilled continuously over one minute, and in-flight requests.

    ``tokens_per_minute`` (prompt + completion tokens of text models) and ``max_generations``
    (text generations running at once) apply to the OpenAI-compatible endpoints only."""

    requests_per_minute: int = 600
    tensor_bytes_per_minute: int = 256 * 1024 * 1024
    max_concurrent: int = 4
    tokens_per_minute: int = 20000
    max_generations: int = 2

    def __post_init__(self) -> None:
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UsageError(f"limit {name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class TensorSpec:
    """A declared model input: requests are checked against it before reaching the worker."""

    name: str
    datatype: str
    #: -1 is a wildcard dimension
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: Path
    #: sandbox runtime; told from the file's content when not given
    runtime: str | None
    #: trusted model-definition file (``build_model()``) for the ``definition`` runtime; ``path`` is
    #: then the weights, and pickle weights are converted to safetensors at admission
    definition: Path | None
    #: ``sha256:HEX``: admission verifies the file against it
    expect: str | None
    signature: Path | None
    public_key: Path | None
    #: exact dotted names allowed for this model's scan (a SUSPICIOUS verdict needs them)
    allow: frozenset[str]
    #: tenants this model is served to; each gets its own workers
    tenants: tuple[str, ...]
    #: sandboxed workers per (tenant, model) pair
    workers: int
    inputs: tuple[TensorSpec, ...]
    #: text models: the largest ``max_tokens`` a request may ask for (and its default)
    max_tokens: int = 512
    #: text models: the context window in tokens (prompt + completion); 0 = the model's own
    #: (reported by its worker at load, at most :data:`MAX_CONTEXT`)
    context_length: int = 0
    #: the one NVIDIA GPU (``/dev/nvidia<gpu>``) this model's single lane runs on, or None (CPU)
    gpu: int | None = None
    #: text models: the guard policy of ``[models.X.guard]`` (None: not guarded)
    guard: GuardPolicy | None = None


#: the largest context a text model may have (a bound on anything a worker claims)
MAX_CONTEXT: Final = 1 << 20


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    #: when set, clients must present a certificate signed by this CA (mTLS); its CN names the tenant
    client_ca: Path | None = None


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    #: Prometheus metrics, always on 127.0.0.1; 0 picks a free port (logged)
    admin_port: int = 9090
    max_body_bytes: int = 8 * 1024 * 1024
    request_timeout_seconds: float = 30.0
    #: a text generation (OpenAI endpoints), from the request to its last token
    generation_timeout_seconds: float = 300.0
    #: SQLite state (tenants, keys, admissions, audit)
    state: Path = Path("airlock-state.db")
    # -- limits applied before authentication (nothing a stranger sends may grow state) --------
    #: open connections in all (more are closed at once)
    max_connections: int = 1024
    #: open connections from one source address (an IPv6 /64 counts as one address)
    max_connections_per_address: int = 64
    #: a request's header block must arrive within this many seconds of its first byte (slowloris)
    header_timeout_seconds: float = 10.0
    #: an idle keep-alive connection is closed after this many seconds
    keep_alive_seconds: float = 5.0
    #: a connection whose reader lets the reply back up for this long is cut (slow reads)
    send_timeout_seconds: float = 30.0
    #: token bucket per source address, taken for every request before authentication (429)
    preauth_requests_per_second: float = 1000.0
    preauth_burst: int = 2000
    #: a second bucket per source address, taken by each failed authentication (401); while it is
    #: empty every request from that address gets a 429 before authentication
    preauth_failures_per_second: float = 5.0
    preauth_failure_burst: int = 50
    #: source addresses whose buckets are remembered (one in debt is never forgotten; beyond this,
    #: new addresses share one overflow bucket)
    preauth_tracked_addresses: int = 65536
    #: JSON bodies larger than this are parsed (and large replies encoded) in the tenant's own codec
    #: process, never on the event loop
    offload_bytes: int = 64 * 1024


@dataclass(frozen=True)
class AuditConfig:
    """Where the audit chain's HMAC key and its periodically written head live (never in the database)."""

    #: 32 random bytes (64 hex digits); created 0600 on first start when missing
    key_file: Path
    #: JSON {seq, head, time, mac}: rewritten every ``head_interval_seconds`` and at shutdown
    head_file: Path
    head_interval_seconds: float = 5.0


@dataclass(frozen=True)
class GatewayConfig:
    source: Path
    server: ServerConfig
    tls: TlsConfig | None
    audit: AuditConfig
    defaults: TenantLimits
    sandbox: SandboxLimits
    models: tuple[ModelConfig, ...]
    #: ``[state] url``: PostgreSQL shared by replicas (None: the SQLite file ``server.state``)
    state_backend: BackendConfig | None = None
    #: ``[limits] url``: Redis shared by replicas (None: budgets in process)
    limits_backend: BackendConfig | None = None

    def model(self, name: str) -> ModelConfig | None:
        for model in self.models:
            if model.name == name:
                return model
        return None


class _Table:
    """A TOML table read key by key; :meth:`done` refuses keys nobody asked for."""

    def __init__(self, where: str, data: object) -> None:
        if not isinstance(data, dict):
            raise UsageError(f"config: [{where}] must be a table, got {type(data).__name__}")
        self.where = where
        self.data: dict[str, object] = data
        self.seen: set[str] = set()

    def get(self, key: str, kind: type | tuple[type, ...], default: object = None) -> object:
        self.seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind is not bool:
            raise UsageError(f"config: {self.where}.{key} must not be a boolean")
        if not isinstance(value, kind):
            raise UsageError(f"config: {self.where}.{key} has the wrong type ({type(value).__name__})")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise UsageError(f"config: unknown key(s) in [{self.where}]: {', '.join(unknown)}")


def _path(base: Path, value: object) -> Path:
    assert isinstance(value, str)
    path = Path(value)
    return path if path.is_absolute() else base / path


def _positive_int(table: _Table, key: str, default: int, *, zero: bool = False) -> int:
    value = table.get(key, int, default)
    assert isinstance(value, int)
    if value < 0 or (value == 0 and not zero):
        raise UsageError(f"config: {table.where}.{key} must be {'>= 0' if zero else '> 0'}, got {value}")
    return value


def _positive_float(table: _Table, key: str, default: float) -> float:
    value = table.get(key, (int, float), default)
    assert isinstance(value, int | float)
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"config: {table.where}.{key} must be > 0, got {value}")
    return float(value)


def _server(base: Path, data: object) -> ServerConfig:
    table = _Table("server", data)
    host = table.get("host", str, "127.0.0.1")
    port = _positive_int(table, "port", 8080, zero=True)
    admin_port = _positive_int(table, "admin_port", 9090, zero=True)
    if port > 65535 or admin_port > 65535:
        raise UsageError("config: server ports must be at most 65535")
    body = _positive_int(table, "max_body_bytes", 8 * 1024 * 1024)
    timeout = table.get("request_timeout_seconds", (int, float), 30.0)
    assert isinstance(timeout, int | float)
    if not math.isfinite(timeout) or timeout <= 0:
        raise UsageError(f"config: server.request_timeout_seconds must be > 0, got {timeout}")
    state = table.get("state", str, "airlock-state.db")
    defaults = ServerConfig()
    ints = {
        key: _positive_int(table, key, getattr(defaults, key))
        for key in (
            "max_connections", "max_connections_per_address", "preauth_burst", "preauth_failure_burst",
            "preauth_tracked_addresses", "offload_bytes",
        )
    }  # fmt: skip
    floats = {
        key: _positive_float(table, key, getattr(defaults, key))
        for key in (
            "header_timeout_seconds",
            "generation_timeout_seconds",
            "keep_alive_seconds",
            "send_timeout_seconds",
            "preauth_requests_per_second",
            "preauth_failures_per_second",
        )
    }
    table.done()
    assert isinstance(host, str)
    return ServerConfig(
        host, port, admin_port, body, float(timeout),
        generation_timeout_seconds=floats["generation_timeout_seconds"],
        state=_path(base, state),
        max_connections=ints["max_connections"],
        max_connections_per_address=ints["max_connections_per_address"],
        header_timeout_seconds=floats["header_timeout_seconds"],
        keep_alive_seconds=floats["keep_alive_seconds"],
        send_timeout_seconds=floats["send_timeout_seconds"],
        preauth_requests_per_second=floats["preauth_requests_per_second"],
        preauth_burst=ints["preauth_burst"],
        preauth_failures_per_second=floats["preauth_failures_per_second"],
        preauth_failure_burst=ints["preauth_failure_burst"],
        preauth_tracked_addresses=ints["preauth_tracked_addresses"],
        offload_bytes=ints["offload_bytes"],
    )  # fmt: skip


def _audit(base: Path, state: Path, data: object) -> AuditConfig:
    table = _Table("audit", data)
    key_file = table.get("key_file", str)
    head_file = table.get("head_file", str)
    interval = _positive_float(table, "head_interval_seconds", 5.0)
    table.done()
    return AuditConfig(
        _path(base, key_file) if key_file is not None else state.with_name(state.name + ".audit-key"),
        _path(base, head_file) if head_file is not None else state.with_name(state.name + ".audit-head"),
        interval,
    )


def _tls(base: Path, data: object) -> TlsConfig:
    table = _Table("tls", data)
    cert, key, ca = table.get("cert", str), table.get("key", str), table.get("client_ca", str)
    table.done()
    if cert is None or key is None:
        raise UsageError("config: [tls] needs both cert and key")
    return TlsConfig(_path(base, cert), _path(base, key), _path(base, ca) if ca is not None else None)


def _limits(data: object) -> TenantLimits:
    table = _Table("defaults", data)
    defaults = TenantLimits()
    fields = {key: _positive_int(table, key, getattr(defaults, key)) for key in LIMIT_FIELDS}
    table.done()
    return TenantLimits(**fields)


def _sandbox(data: object) -> SandboxLimits:
    table = _Table("sandbox", data)
    changes: dict[str, int | float] = {}
    for key, value in table.data.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"config: sandbox.{key} must be a number")
        changes[key] = value
        table.seen.add(key)
    # wall-clock per request is the gateway's own timeout's backstop; keep the sandbox default otherwise
    return SandboxLimits().replace(**changes)


def _inputs(model: str, data: object) -> tuple[TensorSpec, ...]:
    if not isinstance(data, list):
        raise UsageError(f"config: models.{model}.inputs must be an array of tables")
    specs: list[TensorSpec] = []
    for index, item in enumerate(data):
        table = _Table(f"models.{model}.inputs[{index}]", item)
        name, datatype, shape = table.get("name", str), table.get("datatype", str), table.get("shape", list)
        table.done()
        if not isinstance(name, str) or not name:
            raise UsageError(f"config: {table.where}.name is required")
        if datatype not in DATATYPES:
            raise UsageError(
                f"config: {table.where}.datatype {datatype!r} is not one of {', '.join(DATATYPES)}"
            )
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            raise UsageError(f"config: {table.where}.shape must be a list of integers >= -1")
        assert isinstance(datatype, str)
        specs.append(TensorSpec(name, datatype, tuple(shape)))
    return tuple(specs)


def _str_list(table: _Table, key: str) -> tuple[str, ...]:
    value = table.get(key, list, [])
    assert isinstance(value, list)
    if not all(isinstance(item, str) for item in value):
        raise UsageError(f"config: {table.where}.{key} must be a list of strings")
    return tuple(value)


def _model(base: Path, name: str, data: object) -> ModelConfig:
    check_name("model", name)
    table = _Table(f"models.{name}", data)
    path = table.get("path", str)
    if path is None:
        raise UsageError(f"config: models.{name}.path is required")
    runtime = table.get("runtime", str)
    definition = table.get("definition", str)
    expect = table.get("sha256", str)
    signature = table.get("signature", str)
    public_key = table.get("public_key", str)
    allow = _str_list(table, "allow")
    tenants = _str_list(table, "tenants")
    workers = _positive_int(table, "workers", 1)
    inputs = _inputs(name, table.get("inputs", list, []))
    max_tokens = _positive_int(table, "max_tokens", 512)
    context_length = _positive_int(table, "context_length", 0, zero=True)
    gpu = _gpu(table)
    guard_data = table.get("guard", dict)
    table.done()
    guard = guard_policy(base, name, guard_data) if guard_data is not None else None
    if max_tokens > MAX_CONTEXT or context_length > MAX_CONTEXT:
        raise UsageError(f"config: models.{name}.max_tokens and context_length must be at most {MAX_CONTEXT}")
    if context_length and max_tokens > context_length:
        raise UsageError(
            f"config: models.{name}.max_tokens ({max_tokens}) is larger than its context_length ({context_length})"
        )
    if expect is not None:
        assert isinstance(expect, str)
        if not re.fullmatch(r"[0-9a-f]{64}", expect):
            raise UsageError(f"config: models.{name}.sha256 must be 64 lower-case hex digits")
        expect = f"sha256:{expect}"
    if (signature is None) != (public_key is None):
        raise UsageError(f"config: models.{name} needs both signature and public_key, or neither")
    if expect is not None and signature is not None:
        raise UsageError(f"config: models.{name} takes sha256 or signature, not both")
    if not tenants:
        raise UsageError(f"config: models.{name}.tenants is empty: a model must name the tenants it serves")
    for tenant in tenants:
        check_name("tenant", tenant)
    if workers > 16:
        raise UsageError(f"config: models.{name}.workers must be at most 16, got {workers}")
    assert isinstance(runtime, str | None) and isinstance(expect, str | None)
    assert isinstance(definition, str | None)
    if definition is not None:
        if runtime not in (None, "definition"):
            raise UsageError(
                f"config: models.{name}.definition needs runtime 'definition' (or none), got {runtime!r}"
            )
        runtime = "definition"
    return ModelConfig(
        name=name,
        path=_path(base, path),
        runtime=runtime,
        definition=_path(base, definition) if definition is not None else None,
        expect=expect,
        signature=_path(base, signature) if signature is not None else None,
        public_key=_path(base, public_key) if public_key is not None else None,
        allow=frozenset(allow),
        tenants=tenants,
        workers=workers,
        inputs=inputs,
        max_tokens=max_tokens,
        context_length=context_length,
        gpu=gpu,
        guard=guard,
    )


def _gpu(table: _Table) -> int | None:
    value = table.get("gpu", int)
    if value is None:
        return None
    assert isinstance(value, int)
    if not 0 <= value <= MAX_GPU_INDEX:
        raise UsageError(
            f"config: {table.where}.gpu must be a GPU index from 0 to {MAX_GPU_INDEX}, got {value}"
        )
    return value


def _check_gpus(models: tuple[ModelConfig, ...]) -> None:
    """A GPU serves at most one lane, i.e. one (tenant, model) pair: a GPU's memory is never shared
    by two tenants' processes (a process reuses what another freed; see docs/llm.md, GPU lanes)."""
    owners: dict[int, tuple[str, str]] = {}
    for model in models:
        if model.gpu is None:
            continue
        if len(model.tenants) > 1:
            raise UsageError(
                f"config: models.{model.name}.gpu = {model.gpu} is for one tenant, but the model names "
                f"{len(model.tenants)} ({', '.join(model.tenants)}): a GPU is never shared by two tenants; "
                "give each tenant its own [models.X] table with its own gpu"
            )
        lane = (model.tenants[0], model.name)
        other = owners.setdefault(model.gpu, lane)
        if other != lane:
            raise UsageError(
                f"config: gpu {model.gpu} is given to models.{other[1]} (tenant {other[0]}) and to "
                f"models.{model.name} (tenant {lane[0]}): a GPU serves one lane (one tenant, one model)"
            )


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate the config file; any problem is a :class:`UsageError` naming the key."""
    source = Path(path).absolute()
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise UsageError(f"config: cannot read {source}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config: {source} is not valid TOML: {exc}") from exc
    top = _Table("top level", data)
    base = source.parent
    server = _server(base, top.get("server", dict, {}))
    tls_data = top.get("tls", dict)
    tls = _tls(base, tls_data) if tls_data is not None else None
    audit = _audit(base, server.state, top.get("audit", dict, {}))
    defaults = _limits(top.get("defaults", dict, {}))
    sandbox = _sandbox(top.get("sandbox", dict, {}))
    models_data = top.get("models", dict, {})
    state_data, limits_data = top.get("state", dict, {}), top.get("limits", dict, {})
    top.done()
    assert isinstance(state_data, dict) and isinstance(limits_data, dict)
    state_backend = parse_backend("state", base, state_data, frozenset({"postgresql", "postgres"}))
    limits_backend = parse_backend("limits", base, limits_data, frozenset({"redis", "rediss"}))
    assert isinstance(models_data, dict)
    models = tuple(_model(base, name, item) for name, item in models_data.items())
    _check_gpus(models)
    return GatewayConfig(source, server, tls, audit, defaults, sandbox, models, state_backend, limits_backend)
