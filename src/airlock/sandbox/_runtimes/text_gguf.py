"""A GGUF chat model run by transformers + gguf (CPU), inside a job only.

Everything model-supplied is handled here, never in the trusted process: the GGUF metadata and
tokenizer data (parsed by ``gguf`` and ``tokenizers``), the weights (dequantised by ``gguf``) and
the chat template (rendered by Jinja's ``ImmutableSandboxedEnvironment``, inside the job's own
sandbox, bounded in output, time and memory: ``_template``). The job gets the model as a read-only descriptor of a sealed copy; ``gguf`` maps it
read-only.

A request whose prompt and ``max_tokens`` do not fit the model's context generates nothing: it
ends at once with ``done`` (finish ``context``, the prompt's token count). Otherwise generation
streams one ``text`` message per generated token (possibly empty while a multi-byte
character is incomplete) and ends with one ``done`` message; between tokens the job looks for a
``cancel`` message from the host and stops when it finds one. State is per request: a fresh KV
cache per call, the sampling seed set per call, nothing kept between requests.

Device: the CPU, unless the worker was given a GPU (``SandboxPolicy(gpu=N)``, gateway
``[models.X] gpu = N``): the launcher then sets ``AIRLOCK_SANDBOX_DEVICE=cuda`` in the worker's
environment and the model goes to ``cuda:0``, the only GPU whose device node exists inside. A GPU
that CUDA cannot use there is a load error, never a silent fallback to the CPU.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from airlock.sandbox._runtimes.base import Generated, Loaded, NamedArrays, hf_offline

__all__ = ["RUNTIME", "check_request"]

#: the fields a generation request has; the host builds it, the job checks it again
_REQUEST_FIELDS = frozenset(
    {"messages", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "context"}
)
_ROLES = frozenset({"system", "user", "assistant"})
_MAX_STOPS = 4
_MAX_STOP_CHARS = 256


def check_request(request: object) -> dict[str, Any]:
    """The request's fields, checked; ``ValueError`` naming the first bad one.

    Exactly one of ``messages`` (a list of ``{"role", "content"}`` with roles system, user,
    assistant) and ``prompt`` (raw text, no template); ``max_tokens`` >= 1; ``temperature`` in
    [0, 2] (0: greedy); ``top_p`` in (0, 1]; ``seed`` an integer or null; ``stop`` up to 4
    non-empty strings of up to 256 characters; ``context`` an integer >= 0: the host's context
    window for this request (0: the model's own; the smaller of the two applies).
    """
    if not isinstance(request, dict) or set(request) != _REQUEST_FIELDS:
        raise ValueError(f"generate: the request must have exactly the fields {sorted(_REQUEST_FIELDS)}")
    messages, prompt = request["messages"], request["prompt"]
    if (messages is None) == (prompt is None):
        raise ValueError("generate: give exactly one of messages and prompt")
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise ValueError("generate: messages must be a non-empty list")
        for message in messages:
            if (
                not isinstance(message, dict)
                or set(message) != {"role", "content"}
                or message["role"] not in _ROLES
                or not isinstance(message["content"], str)
            ):
                raise ValueError("generate: each message is {role: system|user|assistant, content: string}")
    elif not isinstance(prompt, str):
        raise ValueError("generate: prompt must be a string")
    max_tokens = request["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError("generate: max_tokens must be an integer >= 1")
    temperature, top_p = request["temperature"], request["top_p"]
    if not isinstance(temperature, int | float) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise ValueError("generate: temperature must be a number in [0, 2]")
    if not isinstance(top_p, int | float) or isinstance(top_p, bool) or not 0 < top_p <= 1:
        raise ValueError("generate: top_p must be a number in (0, 1]")
    seed = request["seed"]
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
        raise ValueError("generate: seed must be null or an integer in [0, 2**63)")
    context = request["context"]
    if not isinstance(context, int) or isinstance(context, bool) or not 0 <= context < 2**31:
        raise ValueError("generate: context must be an integer >= 0")
    stop = request["stop"]
    if (
        not isinstance(stop, list)
        or len(stop) > _MAX_STOPS
        or not all(isinstance(s, str) and 0 < len(s) <= _MAX_STOP_CHARS for s in stop)
    ):
        raise ValueError(
            f"generate: stop must be a list of up to {_MAX_STOPS} non-empty strings of up to {_MAX_STOP_CHARS} characters"
        )
    return request


@dataclass
class _Stream:
    """Turns the growing list of generated ids into text deltas; finds stop strings.

    Text that may be the start of a stop string (a suffix of the text that is a prefix of one) is
    held back until the next token tells: a stop string split across tokens is never sent in part.
    The last token (``last``, or :meth:`flush` at the end of text) sends what was held."""

    decode: Callable[[list[int]], str]
    stop: list[str]
    sent: str = ""
    ids: list[int] = field(default_factory=list)
    stopped: bool = False

    def push(self, token: int, last: bool = False) -> str:
        """The new text after ``token`` (empty while a character is incomplete or after a stop)."""
        self.ids.append(token)
        if self.stopped:
            return ""
        text = self.decode(self.ids)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            text = text[:cut]
        elif last:
            pass
        elif text.endswith("\ufffd"):
            return ""  # a multi-byte character is not complete yet
        else:
            text = text[: len(text) - self._held(text)]
        return self._send(text)

    def flush(self) -> str:
        """At the end of text: whatever was held back."""
        return "" if self.stopped else self._send(self.decode(self.ids))

    def _held(self, text: str) -> int:
        """The length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _send(self, text: str) -> str:
        delta = text[len(self.sent) :] if text.startswith(self.sent) else ""
        self.sent += delta
        return delta


@dataclass
class _Chat:
    model: Any
    tokenizer: Any
    template: str | None
    summary_text: str
    #: the context window in tokens (prompt + completion); 0 when the model does not say
    context: int = 0
    kind: str = "text"

    def summary(self) -> str:
        return self.summary_text

    def state_dict(self) -> NamedArrays:
        return [(name, value.detach().numpy()) for name, value in self.model.state_dict().items()]

    def infer(self, inputs: dict[str, np.ndarray[Any, Any]]) -> NamedArrays:
        raise ValueError("infer: a text model generates text (use generate)")

    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        """``messages`` rendered by the chat template, with the bounds of ``_template``."""
        if self.template is None:
            raise ValueError("generate: the model has no chat template; send a raw prompt instead")
        from airlock.sandbox._runtimes._template import render_chat

        tokens = {
            "bos_token": self.tokenizer.bos_token or "",
            "eos_token": self.tokenizer.eos_token or "",
        }
        return render_chat(self.template, messages, tokens)

    def prompt_ids(self, request: dict[str, Any]) -> list[int]:
        """The prompt's token ids. A raw ``prompt`` is the caller's whole text, read as the
        tokenizer reads text (its control tokens included: the caller writes the format). Chat
        ``messages`` are rendered by the template, and only the template's text may hold control
        tokens: a message's content is text, so a special token's string in it ("<|im_end|>") is
        tokenized as the characters it is, never as the token (it would end the caller's turn and
        open one of another role: a forged system message)."""
        if request["prompt"] is not None:
            return self._ids(str(request["prompt"]))
        messages: list[dict[str, str]] = request["messages"]
        specials = _special_strings(self.tokenizer)
        found = re.compile("|".join(map(re.escape, specials))) if specials else None
        if found is None or not any(found.search(m["content"]) for m in messages):
            return self._ids(self.prompt_text(messages))
        # each special token's string in a content becomes one private-use character the contents
        # and the template do not hold; the rendered prompt is cut there, and each mark is
        # tokenized as the text it stands for
        taken = set(self.template or "").union(*(m["content"] for m in messages))
        spare = (c for c in map(chr, _MARKS) if c not in taken)
        marks: dict[str, str] = {}

        def mark(match: re.Match[str]) -> str:
            token = match.group(0)
            if token not in marks:
                marks[token] = next(spare, "")
                if not marks[token]:
                    raise ValueError("generate: the messages hold too many distinct special tokens")
            return marks[token]

        rendered = self.prompt_text([{**m, "content": found.sub(mark, m["content"])} for m in messages])
        texts = {c: t for t, c in marks.items()}
        ids: list[int] = []
        for index, piece in enumerate(re.split("(" + "|".join(map(re.escape, texts)) + ")", rendered)):
            if index % 2:
                ids += self._ids(texts[piece], literal=True)
            elif piece:
                ids += self._ids(piece)
        return ids

    def _ids(self, text: str, literal: bool = False) -> list[int]:
        """``text``'s token ids; ``literal``: with no special token matched in it."""
        encoded = self.tokenizer(text, add_special_tokens=False, split_special_tokens=literal)
        return [int(i) for i in encoded.input_ids]

    def generate(
        self, request: dict[str, Any], emit: Callable[[str], None], cancelled: Callable[[], bool]
    ) -> Generated:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        request = check_request(request)
        ids = torch.tensor([self.prompt_ids(request)], dtype=torch.long).to(self.model.device)
        prompt_tokens = int(ids.shape[1])
        window = min(c for c in (self.context, request["context"], 2**31) if c)
        if prompt_tokens + request["max_tokens"] > window:
            return Generated("context", prompt_tokens, 0)  # nothing generated: the host says why
        stream = _Stream(
            lambda toks: str(self.tokenizer.decode(toks, skip_special_tokens=True)), request["stop"]
        )
        eos = _end_tokens(self.model, self.tokenizer)
        state = {"count": 0, "eos": False, "cancelled": False}

        class _Step(StoppingCriteria):
            """Called after each generated token: stream it, then say whether to stop."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                token = int(input_ids[0, -1])
                state["count"] += 1
                if token in eos:
                    state["eos"] = True
                    emit(stream.flush())
                else:
                    emit(stream.push(token, last=state["count"] >= request["max_tokens"]))
                if cancelled():
                    state["cancelled"] = True
                stop = stream.stopped or state["cancelled"] or state["eos"]
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)

        if request["seed"] is not None:
            torch.manual_seed(request["seed"])  # seeds every CUDA device too
        sampling = request["temperature"] > 0
        with torch.no_grad():
            self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=request["max_tokens"],
                do_sample=sampling,
                temperature=request["temperature"] if sampling else None,
                top_p=request["top_p"] if sampling else None,
                top_k=None,
                stopping_criteria=StoppingCriteriaList([_Step()]),
                eos_token_id=sorted(eos),
                pad_token_id=min(eos),
            )
        if state["cancelled"]:
            finish = "cancelled"
        elif stream.stopped or state["eos"]:
            finish = "stop"
        else:
            finish = "length"
        return Generated(finish, prompt_tokens, int(state["count"]))


#: the private-use planes 15 and 16 (U+F0000..U+10FFFD): marks for special tokens' strings in messages
_MARKS = range(0xF0000, 0x10FFFE)


def _special_strings(tokenizer: Any) -> list[str]:
    """The strings the tokenizer reads as special tokens when it meets them in text, longest first
    (where two overlap the longer is the one matched)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    found = {str(t.content) for t in added.values() if getattr(t, "special", False) and t.content}
    found.update(str(t) for t in getattr(tokenizer, "all_special_tokens", ()) if t)
    return sorted(found, key=lambda t: (-len(t), t))


def _device(torch: Any) -> Any:
    """``cuda:0`` when the worker was given a GPU (and CUDA works there), else the CPU."""
    from airlock.sandbox._gpu import GPU_DEVICE_ENV

    wanted = os.environ.get(GPU_DEVICE_ENV)
    if wanted is None:
        return torch.device("cpu")
    if wanted != "cuda":
        raise ValueError(f"{GPU_DEVICE_ENV}={wanted!r}: only 'cuda' is known")
    if not torch.cuda.is_available():
        raise RuntimeError(
            "this worker was given a GPU but CUDA cannot use it inside the sandbox "
            "(torch built without CUDA, or the driver refused): not falling back to the CPU"
        )
    return torch.device("cuda", 0)


def _end_tokens(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends a generation: the model's generation config and the tokenizer's."""
    found = model.generation_config.eos_token_id
    ids = set(found if isinstance(found, list) else [found]) | {tokenizer.eos_token_id}
    ends = frozenset(int(i) for i in ids if isinstance(i, int))
    if not ends:
        raise ValueError("the model names no end-of-text token")
    return ends


class _TextGGUF:
    name = "text-gguf"
    files = 1

    def warm_up(self) -> None:
        hf_offline(
            (
                "torch",
                "gguf",
                "jinja2.sandbox",
                "jinja2.ext",
                "airlock.sandbox._runtimes._template",
                "transformers",
                "transformers.modeling_gguf_pytorch_utils",
                "transformers.integrations.gguf",
            )
        )

    def load(self, files: Sequence[BinaryIO], definition: str | None, threads: int) -> Loaded:
        import torch

        # untyped libraries: reached through Any
        hf: Any = importlib.import_module("transformers")
        load_gguf_checkpoint = importlib.import_module(
            "transformers.modeling_gguf_pytorch_utils"
        ).load_gguf_checkpoint
        convert_gguf_tokenizer = importlib.import_module(
            "transformers.integrations.gguf"
        ).convert_gguf_tokenizer
        torch.set_num_threads(threads)
        device = _device(torch)  # before the slow part: a GPU that does not work fails at once
        handle = files[0]
        meta = load_gguf_checkpoint(handle, return_tensors=False)
        settings = dict(meta["config"])
        architecture = str(settings.pop("model_type"))
        settings.pop("_model_name_or_path", None)
        config = hf.AutoConfig.for_model(architecture, **settings)
        model = hf.AutoModelForCausalLM.from_config(config)
        tensors = load_gguf_checkpoint(handle, return_tensors=True, model_to_load=model)["tensors"]
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise ValueError(
                f"GGUF weights do not fit the {architecture} model: missing {sorted(set(missing) - tied)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        model.tie_weights()
        model.eval()
        model.to(device)
        tokenizer_config = dict(meta["tokenizer_config"])
        template = tokenizer_config.pop("chat_template", None)
        fast, extra = convert_gguf_tokenizer(architecture, meta["tokenizer"])
        tokenizer = hf.PreTrainedTokenizerFast(tokenizer_object=fast, **extra, **tokenizer_config)
        context = int(getattr(config, "max_position_embeddings", 0) or 0)
        summary = json.dumps(
            {
                "architecture": architecture,
                "parameters": sum(p.numel() for p in model.parameters()),
                "context": context,
                "chat_template": template is not None,
            },
            sort_keys=True,
        )
        return _Chat(model, tokenizer, template if isinstance(template, str) else None, summary, context)


RUNTIME = _TextGGUF()
