"""The guard on KServe v2 BYTES tensors: a tensor model's ``[models.X.guard]`` policy applied to
every element of its BYTES inputs before the worker sees them, and to every element of its BYTES
outputs before the caller does (docs/serve.md, "Guarding text"). Numeric tensors pass untouched.

The same policy, checks, size bounds, offloading and trail as the text endpoints
(:mod:`._text_guard`); what differs is where the texts live:

* inputs: each element is one text, decoded as strict UTF-8 (an element that is not UTF-8 cannot be
  checked: the request is refused, rule ``size.utf8``); the elements of all BYTES inputs are one
  request's texts (sizes bounded together, pseudonyms shared); the checked texts go back in place,
  same shapes;
* outputs: each element is checked like a text answer; canaries are also looked for across the
  elements joined (a canary split over two elements is one canary to a caller that joins them); an
  element that is not UTF-8 cannot be checked and withholds the answer (fail closed).
"""

from __future__ import annotations

from dataclasses import replace
from itertools import chain
from typing import Any, Final

import numpy as np

from airlock.errors import SandboxError
from airlock.gateway._app import CODEC_UNAVAILABLE, GatewayState, _error, _Refused
from airlock.gateway._bytes import BytesTensor, bytes_tensors, is_bytes
from airlock.gateway._codec import CodecUnavailable
from airlock.gateway._config import ModelConfig
from airlock.gateway._guard_policy import GuardPolicy, canonical
from airlock.gateway._text_guard import (
    CANARY_RULE,
    GUARD_COST,
    INPUT_REFUSED,
    OUTPUT_REFUSED,
    TEXT_COST,
    GuardTrail,
    Outcome,
    _count,
    _oversized,
    check_input,
    on_loop,
)
from airlock.guard import Decision, Pseudonyms
from airlock.sandbox._messages import PackedBytes

__all__ = ["UTF8_RULE", "check_outputs", "guard_tensors", "screen_elements", "screen_packed"]

#: the guard's own rule for bytes that are not UTF-8 (airlock.guard's size step)
UTF8_RULE: Final = "size.utf8"


def _decode(items: list[bytes]) -> list[str] | None:
    try:
        return [item.decode("utf-8") for item in items]
    except UnicodeDecodeError:
        return None


def _rebuilt(tensors: dict[str, Any], found: list[BytesTensor], texts: list[str]) -> dict[str, Any]:
    out = dict(tensors)
    at = 0
    for tensor in found:
        count = len(tensor.items)
        array = np.empty(count, dtype=object)
        array[:] = [text.encode("utf-8") for text in texts[at : at + count]]
        out[tensor.name] = array.reshape(tensor.shape)
        at += count
    return out


def check_outputs(key: str, policy: GuardPolicy, texts: list[str]) -> Outcome:
    """A model's BYTES answer: canaries in each element and across them joined, then the output
    guard on every element (here or in a codec process)."""
    if policy.canaries:
        forms = [canonical(text) for text in texts]
        # the joined text's form, not the forms joined: a tag or an entity split over two elements
        # is whole only in the text a caller joins
        joined = canonical("".join(texts))
        if any(canary in form for canary in policy.canaries for form in (*forms, joined)):
            return Outcome(Decision.BLOCKED.value, None, {CANARY_RULE: 1})
    if policy.outputs is None:
        return Outcome(Decision.ALLOWED.value, texts, {})
    return check_input(key, policy.outputs, texts)


def screen_elements(
    direction: str, key: str, policy: GuardPolicy, items: list[bytes], pseudonyms: Pseudonyms
) -> Outcome:
    """BYTES elements decoded (strict UTF-8), their size limits, then the direction's checks; the
    checked texts in the outcome, an output's with ``pseudonyms`` restored (here or in a codec
    process: all of it is work per element)."""
    texts = _decode(items)
    if texts is None:
        return Outcome(Decision.BLOCKED.value, None, {UTF8_RULE: 1})
    config = policy.inputs if direction == "input" else policy.outputs
    if config is not None:
        refused = _oversized(texts, config.limits)
        if refused is not None:
            return refused
    if direction == "input":
        assert config is not None
        return check_input(key, config, texts)
    outcome = check_outputs(key, policy, texts)
    if outcome.texts is None:
        return outcome
    return replace(outcome, texts=pseudonyms.restore_all(outcome.texts))


def screen_packed(
    direction: str, key: str, policy: GuardPolicy, tensors: dict[str, Any], pseudonyms: Pseudonyms
) -> tuple[Outcome, dict[str, tuple[tuple[int, ...], bytes, bytes]] | None]:
    """:func:`screen_elements` over the BYTES ``tensors``, run in the tenant's codec: the elements
    are stepped through here, and the checked ones go back packed (shape, u64 end offsets, blob),
    so the gateway process never holds them one by one."""
    found = bytes_tensors(tensors)
    outcome = screen_elements(
        direction, key, policy, list(chain.from_iterable(t.items for t in found)), pseudonyms
    )
    if outcome.texts is None:
        return outcome, None
    packed: dict[str, tuple[tuple[int, ...], bytes, bytes]] = {}
    at = 0
    for tensor in found:
        raw = [text.encode("utf-8") for text in outcome.texts[at : at + len(tensor.items)]]
        at += len(tensor.items)
        ends = np.cumsum([len(b) for b in raw], dtype=np.uint64) if raw else np.zeros(0, np.uint64)
        packed[tensor.name] = (tensor.shape, ends.astype("<u8").tobytes(), b"".join(raw))
    return replace(outcome, texts=[]), packed


def _small(offload_bytes: int, tensors: dict[str, Any]) -> list[bytes] | None:
    """The BYTES elements of ``tensors`` when checking them fits the event loop (the count is
    looked at first, without touching an element), else None."""
    count = sum(int(array.size) for array in tensors.values())
    if count * TEXT_COST > offload_bytes // GUARD_COST:
        return None
    items = list(chain.from_iterable(tensor.items for tensor in bytes_tensors(tensors)))
    return items if on_loop(offload_bytes, items) else None


async def guard_tensors(
    state: GatewayState, tenant: str, model: ModelConfig, direction: str, tensors: dict[str, Any],
    deadline: float, trail: GuardTrail, pseudonyms: Pseudonyms,
) -> tuple[dict[str, Any], Pseudonyms]:  # fmt: skip
    """``tensors`` with their BYTES elements checked and rewritten (and, for inputs, the pseudonyms
    to restore in the outputs); a blocked input is a 400, a blocked output a 502, fixed texts.
    Nothing is done per element unless a policy applies; then in the tenant's codec unless the
    elements are few and small enough for the loop."""
    policy = model.guard
    if policy is None:
        return tensors, pseudonyms
    config = policy.inputs if direction == "input" else policy.outputs
    if direction == "input" and config is None:
        return tensors, pseudonyms
    if direction == "output" and config is None and not policy.canaries and not len(pseudonyms):
        return tensors, pseudonyms  # nothing to check, nothing to put back
    selected = {name: array for name, array in tensors.items() if is_bytes(array)}
    if not selected:
        return tensors, pseudonyms
    key = f"{model.name}/{direction}"
    items = _small(state.config.server.offload_bytes, selected)
    if items is not None:
        outcome = screen_elements(direction, key, policy, items, pseudonyms)
        packed = None
    else:
        # decoding, the size limits and the checks all run in the tenant's codec: a body of many
        # tiny elements is as much fixed work per element as long texts are
        try:
            outcome, packed = await state.codecs.run(
                tenant, deadline, screen_packed, direction, key, policy, selected, pseudonyms
            )
        except TimeoutError:
            raise _Refused(_error(504), "failed:timeout") from None
        except CodecUnavailable:
            raise _Refused(_error(503, text=CODEC_UNAVAILABLE), "failed:codec") from None
    _count(state, model.name, direction, outcome, trail)
    if outcome.texts is None:
        if direction == "input":
            raise _Refused(_error(400, text=INPUT_REFUSED), "denied:guard-input")
        raise _Refused(_error(502, text=OUTPUT_REFUSED), "denied:guard-output")
    if packed is None:
        checked = _rebuilt(tensors, bytes_tensors(selected), outcome.texts)
    else:
        if set(packed) != set(selected):  # every checked tensor comes back, or none goes on
            raise _Refused(_error(503, text=CODEC_UNAVAILABLE), "failed:codec")
        checked = dict(tensors)
        for name, (shape, ends, blob) in packed.items():
            original = selected[name]
            try:
                # the codec is airlock's own code; its answer is still checked (count = the
                # tensor's own, offsets in order, within the blob) before it goes anywhere
                checked[name] = PackedBytes.checked(shape, ends, blob, int(original.size), 1 << 62)
            except SandboxError:
                raise _Refused(_error(503, text=CODEC_UNAVAILABLE), "failed:codec") from None
            if tuple(shape) != tuple(original.shape):
                raise _Refused(_error(503, text=CODEC_UNAVAILABLE), "failed:codec")
    if direction == "input":
        return checked, Pseudonyms(outcome.pseudonyms)
    return checked, pseudonyms
