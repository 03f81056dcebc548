"""Byte-level BPE tokenizer with StarCoder2's special tokens at StarCoder2's ids (0-6)."""

from __future__ import annotations

import random
from pathlib import Path

from .data import SourceFile

# Same order, and so the same ids, as StarCoder2's vocabulary.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<fim_prefix>",
    "<fim_middle>",
    "<fim_suffix>",
    "<fim_pad>",
    "<repo_name>",
    "<file_sep>",
]
EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, REPO_NAME, FILE_SEP = range(7)
TOKENIZER_SAMPLE_BYTES = 24_000_000


def tokenizer_sample(files: list[SourceFile], seed: int) -> list[str]:
    """A seeded sample of about TOKENIZER_SAMPLE_BYTES of training text."""
    rng = random.Random(seed)
    shuffled = files[:]
    rng.shuffle(shuffled)
    texts, total = [], 0
    for f in shuffled:
        if total > TOKENIZER_SAMPLE_BYTES:
            break
        texts.append(f.text)
        total += len(f.text)
    return texts


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int = 1024):
    """Byte-level BPE over `texts` with the special tokens first; returns a PreTrainedTokenizerFast."""
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
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=max_length,
    )


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
