"""Build a tiny random StarCoder2 model and a small byte-level BPE tokenizer.

The tokenizer carries StarCoder2's special tokens first (same ids as the real
vocabulary), so prompts built for StarCoder2 work unchanged.  Deterministic for a
given seed; takes a few seconds.  Usable as a script:

    python tests/tiny_model.py OUT_DIR
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

# Same order (and so the same ids) as StarCoder2's tokenizer.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<fim_prefix>",
    "<fim_middle>",
    "<fim_suffix>",
    "<fim_pad>",
    "<repo_name>",
    "<file_sep>",
]


def _training_text() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = ["argparse.py", "json/__init__.py", "textwrap.py", "dataclasses.py", "functools.py"]
    return [(stdlib / n).read_text(encoding="utf-8") for n in names if (stdlib / n).exists()]


def build_tokenizer(vocab_size: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import Starcoder2Config, Starcoder2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = Starcoder2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        sliding_window=4096,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    model = Starcoder2ForCausalLM(config)
    with torch.no_grad():
        # A random model prefers special tokens as often as any other; zero their
        # output rows so suggestions are ordinary (if meaningless) text.
        model.lm_head.weight[: len(SPECIAL_TOKENS)] = 0.0
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


if __name__ == "__main__":
    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))
