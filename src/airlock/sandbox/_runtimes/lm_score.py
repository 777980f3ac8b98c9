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

__all__ = ["BUNDLE_FILES", "BUNDLE_MAGIC", "OP_COMPLETE", "OP_SCORE", "RUNTIME"]

BUNDLE_MAGIC: Final = b"ALMEMB1\n"
BUNDLE_FILES: Final = ("config.json", "tokenizer.json", "model.safetensors")
OP_SCORE: Final = 0
OP_COMPLETE: Final = 1
_BATCH: Final = 32


def _read_bundle(handle: BinaryIO) -> dict[str, bytes]:
    raw = handle.read()
    if not raw.startswith(BUNDLE_MAGIC):
        raise ValueError("lm-score: neither a GGUF file nor an airlock model bundle")
    view, at = memoryview(raw), len(BUNDLE_MAGIC)
    (count,) = struct.unpack_from("<I", view, at)
    at += 4
    if count != len(BUNDLE_FILES):
        raise ValueError(f"lm-score: a bundle holds {len(BUNDLE_FILES)} files, this one {count}")
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
    if tuple(files) != BUNDLE_FILES or at != len(raw):
        raise ValueError(f"lm-score: the bundle must hold exactly {', '.join(BUNDLE_FILES)}")
    return files


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


def _from_bundle(files: dict[str, bytes], threads: int) -> _Scorer:
    import safetensors.torch
    import torch
    from tokenizers import Tokenizer

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
    tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    vocab = int(config.vocab_size)

    def token(name: str) -> int | None:
        value = getattr(config, name, None)
        value = value[0] if isinstance(value, list) and value else value
        return int(value) if isinstance(value, int) and 0 <= value < vocab else None

    eos = token("eos_token_id")
    context = int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 0)
    return _Scorer(
        model,
        lambda text: list(tokenizer.encode(text, add_special_tokens=False).ids),
        lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)),
        token("bos_token_id"),
        [eos] if eos is not None else [0],
        context,
        json.dumps({"architecture": architecture, "parameters": sum(p.numel() for p in model.parameters())}),
    )


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
        hf_offline(("torch", "safetensors.torch", "tokenizers", "transformers"))
        if importlib.util.find_spec("gguf") is not None:  # GGUF models need the text extra
            from airlock.sandbox._runtimes import text_gguf

            text_gguf.RUNTIME.warm_up()

    def load(self, files: Sequence[BinaryIO], definition: str | None, threads: int) -> Loaded:
        handle = files[0]
        head = handle.read(4)
        handle.seek(0)
        if head == b"GGUF":
            return _from_gguf(handle, threads)
        return _from_bundle(_read_bundle(handle), threads)


RUNTIME = _LMScore()
