"""Build a tiny Hugging Face chat model folder (random weights, no download).

Run as a throwaway subprocess (``python hf_chat_model.py OUT_DIR``): torch and transformers run
here, never in the test process. A 2-layer Llama of 32 dimensions (about 40k parameters) with a
byte-level tokenizer (256 byte tokens and three ChatML special tokens, no merges) built with
``tokenizers``; the weights are seeded, so the folder is the same at every build. Writes
``config.json`` and ``model.safetensors`` (``save_pretrained``), ``tokenizer.json`` and a
``tokenizer_config.json`` holding :data:`TEMPLATE` as its ``chat_template``. Prints the number of
parameters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SEED = 20261130
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
#: ChatML, as SmolLM2 and Qwen write it
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def main(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    for token in SPECIAL:
        vocab[token] = len(vocab)
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens(list(SPECIAL))
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    raw.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|endoftext|>",
                "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "special": True},
                "pad_token": "<|endoftext|>",
                "chat_template": TEMPLATE,
            }
        )
    )
    print(sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
