"""A causal language model that scores texts and completes prefixes, inside a job only
(``airlock.probe.memorization``: exposure and extraction of canaries).

The job receives one read-only descriptor: either a GGUF file (loaded exactly as the
``text-gguf`` runtime loads it) or a *bundle* the host built from a Hugging Face folder: magic
:data:`BUNDLE_MAGIC`, a little-endian u32 count, then per file a u16 name length, the UTF-8 name
and a u64 size, then the files' bytes in that order. The bundle holds ``config.json`` (the
architecture must be one transformers builds itself: no remote code is ever imported),
``tokenizer.json`` (a ``tokenizers`` fast tokenizer) and ``model.safetensors``; the host copied
them from sealed copies without parsing them.

Requests are ``infer`` calls over the checked tensor channel (no new message type):

* ``op`` = [0] **score**: ``text`` (uint8, the UTF-8 texts one after another) and ``lengths``
  (int64, bytes per text) -> ``nll`` (float64, the summed negative log-likelihood in nats of each
  text's tokens, each given the ones before; the model's BOS token is put first when it has one,
  otherwise the first token is context only) and ``tokens`` (int64, how many tokens were scored).
* ``op`` = [1] **complete**: ``text``/``lengths`` as above (prompts), ``max_new_tokens`` [m],
  ``beams`` [b] -> ``text``/``lengths`` (the continuations, special tokens dropped) and
  ``tokens`` (int64, tokens generated). Greedy when b = 1, beam search otherwise; stops at the
  model's end-of-text token or at the end of its context.

A *chat bundle* (magic :data:`CHAT_BUNDLE_MAGIC`, the probe's local Hugging Face target) is laid
out the same way and holds the three files, then those of :data:`CHAT_FILES` the folder has, in
that order. The job then loads it for chat: a ``generate`` request (the ``text-gguf`` protocol,
:func:`airlock.sandbox._runtimes.text_gguf.check_request`) renders the chat template here, inside
the job, with the bounds of :mod:`airlock.sandbox._runtimes._template`. The template is found as
transformers finds it: ``chat_template.jinja``, else ``chat_template`` in ``tokenizer_config.json``
(a string, or a list of named templates of which ``default`` is taken), else ``chat_template`` in
``chat_template.json``; none is a load error, and so is a template that fails on a system and a
user message (rendered once at load, so that a broken template stops the run at its start).
Special tokens (``bos_token`` ... ``pad_token``) come from ``tokenizer_config.json``; the end of
a reply is the config's ``eos_token_id`` or the tokenizer's ``eos_token``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

import numpy as np

from airlock.sandbox._runtimes.base import Loaded, NamedArrays, hf_offline

__all__ = [
    "BUNDLE_FILES",
    "BUNDLE_MAGIC",
    "CHAT_BUNDLE_MAGIC",
    "CHAT_FILES",
    "OP_COMPLETE",
    "OP_SCORE",
    "RUNTIME",
]

BUNDLE_MAGIC: Final = b"ALMEMB1\n"
CHAT_BUNDLE_MAGIC: Final = b"ALCHAT1\n"
BUNDLE_FILES: Final = ("config.json", "tokenizer.json", "model.safetensors")
#: the files a chat bundle may add (each when the folder has it), in this order
CHAT_FILES: Final = ("tokenizer_config.json", "chat_template.jinja", "chat_template.json")
#: a trial conversation rendered at load: the probe's every request has a system and a user turn
_TRIAL: Final = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello"},
)
_SPECIAL_TOKENS: Final = ("bos_token", "eos_token", "unk_token", "pad_token")
OP_SCORE: Final = 0
OP_COMPLETE: Final = 1
_BATCH: Final = 32


def _read_bundle(handle: BinaryIO) -> tuple[bool, dict[str, bytes]]:
    """(whether it is a chat bundle, its files by name)."""
    raw = handle.read()
    chat = raw.startswith(CHAT_BUNDLE_MAGIC)
    if not chat and not raw.startswith(BUNDLE_MAGIC):
        raise ValueError("lm-score: neither a GGUF file nor an airlock model bundle")
    view, at = memoryview(raw), len(BUNDLE_MAGIC)
    (count,) = struct.unpack_from("<I", view, at)
    at += 4
    if count > len(BUNDLE_FILES) + len(CHAT_FILES):
        raise ValueError(f"lm-score: a bundle of {count} files")
    table = []
    for _ in range(count):
        (size,) = struct.unpack_from("<H", view, at)
        name = bytes(view[at + 2 : at + 2 + size]).decode("utf-8")
        (length,) = struct.unpack_from("<Q", view, at + 2 + size)
        at += 10 + size
        table.append((name, length))
    files = {}
    for name, length in table:
        if at + length > len(raw):
            raise ValueError("lm-score: the bundle is truncated")
        files[name] = bytes(view[at : at + length])
        at += length
    names = tuple(name for name, _ in table)
    extra = names[len(BUNDLE_FILES) :]
    if (
        names[: len(BUNDLE_FILES)] != BUNDLE_FILES
        or len(files) != len(names)
        or at != len(raw)
        or (extra and not chat)
        or extra != tuple(n for n in CHAT_FILES if n in extra)
    ):
        raise ValueError(
            f"lm-score: the bundle must hold exactly {', '.join(BUNDLE_FILES)} (a chat bundle: "
            f"then any of {', '.join(CHAT_FILES)}, in that order)"
        )
    return chat, files


def _texts(inputs: dict[str, np.ndarray[Any, Any]]) -> list[str]:
    data, lengths = inputs["text"], inputs["lengths"]
    if data.dtype != np.uint8 or lengths.dtype != np.int64 or data.ndim != 1 or lengths.ndim != 1:
        raise ValueError("lm-score: text must be uint8[total] and lengths int64[n]")
    if (lengths < 0).any() or int(lengths.sum()) != data.size:
        raise ValueError("lm-score: lengths do not add up to the text")
    blob, texts, at = data.tobytes(), [], 0
    for length in lengths.tolist():
        texts.append(blob[at : at + length].decode("utf-8"))
        at += length
    return texts


def _scalar(inputs: dict[str, np.ndarray[Any, Any]], name: str, low: int, high: int) -> int:
    value = inputs.get(name)
    if value is None or value.dtype != np.int64 or value.shape != (1,) or not low <= int(value[0]) <= high:
        raise ValueError(f"lm-score: {name} must be int64[1] in [{low}, {high}]")
    return int(value[0])


def _packed(texts: list[str]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    encoded = [t.encode("utf-8") for t in texts]
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return blob, np.array([len(e) for e in encoded], dtype=np.int64)


@dataclass
class _Scorer:
    model: Any
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    bos: int | None
    eos: list[int]
    context: int
    summary_text: str
    kind: str = "text"

    def summary(self) -> str:
        return self.summary_text

    def state_dict(self) -> NamedArrays:
        raise ValueError("lm-score: this runtime scores and completes texts; it lists no tensors")

    def _ids(self, text: str) -> list[int]:
        ids = ([self.bos] if self.bos is not None else []) + self.encode(text)
        if self.context and len(ids) > self.context:
            raise ValueError(f"lm-score: a text of {len(ids)} tokens exceeds the context of {self.context}")
        return ids

    def infer(self, inputs: dict[str, np.ndarray[Any, Any]]) -> NamedArrays:
        op = _scalar(inputs, "op", OP_SCORE, OP_COMPLETE)
        texts = _texts(inputs)
        if op == OP_SCORE:
            if set(inputs) != {"op", "text", "lengths"}:
                raise ValueError("lm-score: score takes exactly op, text, lengths")
            return self._score(texts)
        if set(inputs) != {"op", "text", "lengths", "max_new_tokens", "beams"}:
            raise ValueError("lm-score: complete takes exactly op, text, lengths, max_new_tokens, beams")
        return self._complete(
            texts, _scalar(inputs, "max_new_tokens", 1, 4096), _scalar(inputs, "beams", 1, 16)
        )

    def _score(self, texts: list[str]) -> NamedArrays:
        import torch

        nll = np.zeros(len(texts), dtype=np.float64)
        counts = np.zeros(len(texts), dtype=np.int64)
        rows = [self._ids(t) for t in texts]
        device = self.model.device
        for start in range(0, len(rows), _BATCH):
            batch = rows[start : start + _BATCH]
            width = max(len(r) for r in batch)
            ids = torch.tensor([r + [0] * (width - len(r)) for r in batch], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch], device=device)
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None])[..., 0]
            logp = (logp * mask[:, 1:]).double().sum(dim=1)
            for offset, row in enumerate(batch):
                nll[start + offset] = -float(logp[offset])
                counts[start + offset] = len(row) - 1
        return [("nll", nll), ("tokens", counts)]

    def _complete(self, prompts: list[str], max_new_tokens: int, beams: int) -> NamedArrays:
        import torch

        outputs, counts = [], []
        for prompt in prompts:
            ids = torch.tensor([self._ids(prompt)], device=self.model.device)
            budget = min(max_new_tokens, self.context - ids.shape[1]) if self.context else max_new_tokens
            if budget < 1:
                raise ValueError("lm-score: a prompt fills the model's context: nothing left to generate")
            with torch.no_grad():
                out = self.model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=budget,
                    do_sample=False,
                    num_beams=beams,
                    eos_token_id=self.eos,
                    pad_token_id=self.eos[0],
                )
            new = [int(t) for t in out[0, ids.shape[1] :].tolist()]
            while new and new[-1] in self.eos:
                new.pop()
            outputs.append(self.decode(new))
            counts.append(len(new))
        text, lengths = _packed(outputs)
        return [("text", text), ("lengths", lengths), ("tokens", np.array(counts, dtype=np.int64))]


def _build(files: dict[str, bytes], threads: int) -> tuple[Any, Any, str]:
    """(the model, its config, its architecture) from a bundle's config.json and weights."""
    import safetensors.torch
    import torch

    from airlock.sandbox._runtimes.text_gguf import _device

    hf: Any = importlib.import_module("transformers")
    device = _device(torch)  # the GPU the worker was given, checked before the slow part; else the CPU
    settings = json.loads(files["config.json"])
    if not isinstance(settings, dict) or not isinstance(settings.get("model_type"), str):
        raise ValueError("lm-score: config.json must be an object with a model_type")
    for key in ("auto_map", "_name_or_path", "transformers_version"):
        settings.pop(key, None)  # no remote code: only architectures transformers builds itself
    architecture = str(settings.pop("model_type"))
    config = hf.AutoConfig.for_model(architecture, **settings)
    torch.set_num_threads(threads)
    model = hf.AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(
        safetensors.torch.load(files["model.safetensors"]), strict=False
    )
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"lm-score: the weights do not fit the {architecture} model: missing "
            f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.tie_weights()
    model.eval()
    model.to(device)
    return model, config, architecture


def _context(config: Any) -> int:
    return int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 0)


def _from_bundle(files: dict[str, bytes], threads: int) -> _Scorer:
    from tokenizers import Tokenizer

    model, config, architecture = _build(files, threads)
    tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    vocab = int(config.vocab_size)

    def token(name: str) -> int | None:
        value = getattr(config, name, None)
        value = value[0] if isinstance(value, list) and value else value
        return int(value) if isinstance(value, int) and 0 <= value < vocab else None

    eos = token("eos_token_id")
    return _Scorer(
        model,
        lambda text: list(tokenizer.encode(text, add_special_tokens=False).ids),
        lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)),
        token("bos_token_id"),
        [eos] if eos is not None else [0],
        _context(config),
        json.dumps({"architecture": architecture, "parameters": sum(p.numel() for p in model.parameters())}),
    )


def _json_object(files: dict[str, bytes], name: str) -> dict[str, Any]:
    if name not in files:
        return {}
    value = json.loads(files[name])
    if not isinstance(value, dict):
        raise ValueError(f"lm-score: {name} must be a JSON object")
    return value


def chat_template(files: dict[str, bytes]) -> str:
    """The chat template, found as transformers finds a tokenizer's (see the module's docstring)."""
    if "chat_template.jinja" in files:
        return files["chat_template.jinja"].decode("utf-8")
    found = _json_object(files, "tokenizer_config.json").get("chat_template")
    if isinstance(found, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in found if isinstance(t, dict)}
        found = named.get("default")
        if found is None:
            raise ValueError("lm-score: tokenizer_config.json names chat templates but none is 'default'")
    if found is None:
        found = _json_object(files, "chat_template.json").get("chat_template")
    if found is None:
        raise ValueError(
            "lm-score: the model has no chat template (chat_template.jinja, chat_template in "
            "tokenizer_config.json or in chat_template.json)"
        )
    if not isinstance(found, str):
        raise ValueError("lm-score: the chat template is not a string")
    return found


def _special_tokens(settings: dict[str, Any]) -> dict[str, str]:
    """``bos_token`` ... from tokenizer_config.json: a string, or a saved AddedToken (its content)."""
    tokens = {}
    for name in _SPECIAL_TOKENS:
        value = settings.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            tokens[name] = value
    return tokens


def _chat_from_bundle(files: dict[str, bytes], threads: int) -> Loaded:
    from tokenizers import Tokenizer

    from airlock.sandbox._runtimes.text_gguf import _Chat

    template = chat_template(files)  # before the slow load: a folder without one fails at once
    hf: Any = importlib.import_module("transformers")
    model, config, architecture = _build(files, threads)
    raw = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    special = _special_tokens(_json_object(files, "tokenizer_config.json"))
    tokenizer = hf.PreTrainedTokenizerFast(tokenizer_object=raw, **special)
    context = _context(config)
    summary = json.dumps(
        {
            "architecture": architecture,
            "parameters": sum(p.numel() for p in model.parameters()),
            "context": context,
            "chat_template": True,
        },
        sort_keys=True,
    )
    chat = _Chat(model, tokenizer, template, summary, context)
    chat.prompt_text(list(_TRIAL))  # a template that fails on the probe's first turns fails the load
    return chat


def _from_gguf(handle: BinaryIO, threads: int) -> _Scorer:
    from airlock.sandbox._runtimes import text_gguf

    chat: Any = text_gguf.RUNTIME.load([handle], None, threads)
    tokenizer = chat.tokenizer
    return _Scorer(
        chat.model,
        lambda text: list(tokenizer(text, add_special_tokens=False).input_ids),
        lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)),
        tokenizer.bos_token_id if isinstance(tokenizer.bos_token_id, int) else None,
        sorted(text_gguf._end_tokens(chat.model, tokenizer)),
        chat.context,
        chat.summary_text,
    )


class _LMScore:
    name = "lm-score"
    files = 1

    def warm_up(self) -> None:
        hf_offline(
            (
                "torch",
                "safetensors.torch",
                "tokenizers",
                "transformers",
                "jinja2.sandbox",
                "jinja2.ext",
                "airlock.sandbox._runtimes._template",
            )
        )
        if importlib.util.find_spec("gguf") is not None:  # GGUF models need the text extra
            from airlock.sandbox._runtimes import text_gguf

            text_gguf.RUNTIME.warm_up()

    def load(self, files: Sequence[BinaryIO], definition: str | None, threads: int) -> Loaded:
        handle = files[0]
        head = handle.read(4)
        handle.seek(0)
        if head == b"GGUF":
            return _from_gguf(handle, threads)
        chat, bundle = _read_bundle(handle)
        return _chat_from_bundle(bundle, threads) if chat else _from_bundle(bundle, threads)


RUNTIME = _LMScore()
