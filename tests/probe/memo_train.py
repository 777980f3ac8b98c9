"""Train a tiny GPT-2 on synthetic text with planted canaries; save it as a Hugging Face folder.

Run as a throwaway subprocess (``python memo_train.py OUT_DIR``): torch and transformers run
here, never in the test process. Everything is built in code (no download): a byte-level
tokenizer (256 byte tokens and ``<|endoftext|>``, no merges), a 2-layer GPT-2 of 64 dimensions,
and a corpus of filler lines with digits in them, plus the INSERTED canaries repeated
:data:`REPEATS` times each. The HELD_OUT canaries (same format) are never shown.
Prints one JSON line: the training loss at the start and the end.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

#: (name, secret): the canaries put into the training data
INSERTED = (("alice", "482915"), ("bruno", "730264"))
#: canaries of the same format the model never sees
HELD_OUT = (("carol", "159372"), ("dmitri", "864021"))
TEMPLATE = "{name}'s PIN is {secret}"
REPEATS = 50
STEPS = 600
SEED = 1234

_WORDS = "the a cat dog sat on mat ran to house tree blue red big small over under and with".split()


def corpus(rng: random.Random) -> list[str]:
    lines = []
    for _ in range(300):
        words = rng.choices(_WORDS, k=rng.randint(4, 9))
        if rng.random() < 0.5:  # digits in ordinary text: the model must learn them as well
            words.insert(rng.randrange(len(words)), "".join(rng.choices("0123456789", k=rng.randint(2, 6))))
        lines.append(" ".join(words))
    for name, secret in INSERTED:
        lines.extend([TEMPLATE.format(name=name, secret=secret)] * REPEATS)
    rng.shuffle(lines)
    return lines


def main(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    rng = random.Random(SEED)  # noqa: S311 - a reproducible corpus
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    eos = len(vocab)
    vocab["<|endoftext|>"] = eos
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens(["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")  # type: ignore[no-untyped-call]  # noqa: S106
    config = GPT2Config(
        vocab_size=eos + 1, n_positions=64, n_embd=64, n_layer=2, n_head=2, bos_token_id=eos, eos_token_id=eos
    )
    model = GPT2LMHeadModel(config)
    rows = [[eos, *raw.encode(line).ids, eos] for line in corpus(rng)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [eos] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, STEPS)
    losses = []
    for _ in range(STEPS):
        pick = torch.randint(0, len(rows), (16,))
        loss = model(ids[pick], labels=labels[pick]).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    print(json.dumps({"first_loss": losses[0], "last_loss": sum(losses[-20:]) / 20}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
