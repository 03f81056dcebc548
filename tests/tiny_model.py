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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for training/
from training.tokenizer import SPECIAL_TOKENS, train_tokenizer  # noqa: E402

def _training_text() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = ["argparse.py", "json/__init__.py", "textwrap.py", "dataclasses.py", "functools.py"]
    return [(stdlib / n).read_text(encoding="utf-8") for n in names if (stdlib / n).exists()]


def build_tokenizer(vocab_size: int = 1024):
    """The bundled model's tokenizer recipe (training/tokenizer.py) on a few stdlib modules."""
    return train_tokenizer(_training_text(), vocab_size, max_length=4096)


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
