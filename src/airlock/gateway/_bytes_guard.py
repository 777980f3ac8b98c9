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

from airlock.gateway._app import GatewayState, _error, _Refused
from airlock.gateway._bytes import BytesTensor, bytes_tensors
from airlock.gateway._config import ModelConfig
from airlock.gateway._guard_policy import GuardPolicy, canonical
from airlock.gateway._text_guard import (
    CANARY_RULE,
    INPUT_REFUSED,
    OUTPUT_REFUSED,
    GuardTrail,
    Outcome,
    _count,
    _oversized,
    _run,
    check_input,
    on_loop,
)
from airlock.guard import Decision, Pseudonyms

__all__ = ["UTF8_RULE", "check_outputs", "guard_tensors", "screen_elements"]

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


async def guard_tensors(
    state: GatewayState, tenant: str, model: ModelConfig, direction: str, tensors: dict[str, Any],
    deadline: float, trail: GuardTrail, pseudonyms: Pseudonyms,
) -> tuple[dict[str, Any], Pseudonyms]:  # fmt: skip
    """``tensors`` with their BYTES elements checked and rewritten (and, for inputs, the pseudonyms
    to restore in the outputs); a blocked input is a 400, a blocked output a 502, fixed texts."""
    policy = model.guard
    found = bytes_tensors(tensors)
    if policy is None or not found:
        return tensors, pseudonyms
    config = policy.inputs if direction == "input" else policy.outputs
    if direction == "input" and config is None:
        return tensors, pseudonyms
    if direction == "output" and config is None and not policy.canaries and not len(pseudonyms):
        return tensors, pseudonyms  # nothing to check, nothing to put back
    items = list(chain.from_iterable(tensor.items for tensor in found))
    key = f"{model.name}/{direction}"
    # decoding, the size limits and the checks all run where the elements' work fits (on_loop):
    # a body of many tiny elements is as much fixed work per element as long texts are
    outcome = await _run(
        state,
        tenant,
        on_loop(state.config.server.offload_bytes, items),
        deadline,
        screen_elements,
        direction,
        key,
        policy,
        items,
        pseudonyms,
    )
    _count(state, model.name, direction, outcome, trail)
    if outcome.texts is None:
        if direction == "input":
            raise _Refused(_error(400, text=INPUT_REFUSED), "denied:guard-input")
        raise _Refused(_error(502, text=OUTPUT_REFUSED), "denied:guard-output")
    if direction == "input":
        return _rebuilt(tensors, found, outcome.texts), Pseudonyms(outcome.pseudonyms)
    return _rebuilt(tensors, found, outcome.texts), pseudonyms
