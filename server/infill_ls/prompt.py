"""Build the token ids sent to the model, within an exact token budget.

The budget is ``contextTokens - maxNewTokens``: room for the generated tokens is
always reserved.  When the file does not fit, the far ends are cut (the start of
the prefix, the end of the suffix), never the text next to the cursor.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .templates import FimTemplate

# Share of the budget the suffix may claim when both sides are too long: code
# before the cursor predicts the middle better than code after it.
SUFFIX_SHARE = 0.25
# First guess of characters per token when cutting a long text before encoding it.
CHARS_PER_TOKEN_GUESS = 4


class PromptTokenizer:
    """The model's tokenizer, for text that may contain special-token look-alikes.

    Text is encoded with special tokens split, so a file containing the literal
    string ``<fim_middle>`` cannot inject a control token.  Encodings of recently
    seen strings are cached (an unchanged suffix costs nothing on the next keystroke).
    """

    def __init__(self, tokenizer, cache_size: int = 256):
        self.tokenizer = tokenizer
        self.vocabulary: dict[str, int] = tokenizer.get_vocab()
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._cache_size = cache_size

    def special_id(self, token: str) -> int:
        return self.vocabulary[token]

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            self._cache[text] = ids
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(text)
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def tail(self, text: str, limit: int) -> tuple[list[int], bool]:
        """The last ``limit`` tokens of ``text`` and whether anything was cut."""
        return self._window(text, limit, from_end=True)

    def head(self, text: str, limit: int) -> tuple[list[int], bool]:
        """The first ``limit`` tokens of ``text`` and whether anything was cut."""
        return self._window(text, limit, from_end=False)

    def _window(self, text: str, limit: int, from_end: bool) -> tuple[list[int], bool]:
        if limit <= 0:
            return [], bool(text)
        # Encode only a window of characters near the cursor, growing it until it
        # holds enough tokens: a keystroke in a 10 MB file must not encode 10 MB.
        # Tokens far from the window's cut edge are the same as in the whole text
        # because byte-level BPE never merges across its pre-tokenizer splits.
        chars = limit * CHARS_PER_TOKEN_GUESS
        while True:
            whole = chars >= len(text)
            piece = text if whole else (text[-chars:] if from_end else text[:chars])
            ids = self.encode(piece)
            if whole and len(ids) <= limit:
                return ids, False
            # One extra token guards the cut edge, whose token may be partial.
            if len(ids) > limit + 1 or whole:
                return (ids[-limit:] if from_end else ids[:limit]), True
            chars *= 2


@dataclass(frozen=True)
class ContextFile:
    """A snippet of another file, shown to the model before the current file."""

    path: str
    text: str


@dataclass
class Prompt:
    ids: list[int]
    prefix_tokens: int
    suffix_tokens: int
    prefix_cut: bool
    suffix_cut: bool
    context_tokens: int = 0

    def __len__(self) -> int:
        return len(self.ids)


def split_budget(prefix_len: int, suffix_len: int, budget: int) -> tuple[int, int]:
    """How many prefix and suffix tokens to keep; unused share flows to the other side."""
    if prefix_len + suffix_len <= budget:
        return prefix_len, suffix_len
    suffix_keep = min(suffix_len, max(int(budget * SUFFIX_SHARE), budget - prefix_len))
    return min(prefix_len, budget - suffix_keep), suffix_keep


def build_fim_prompt(
    tokenizer: PromptTokenizer,
    template: FimTemplate,
    prefix: str,
    suffix: str,
    budget: int,
) -> Prompt:
    """``<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>`` in at most ``budget`` tokens."""
    specials = [tokenizer.special_id(t) for t in (template.prefix, template.suffix, template.middle)]
    room = max(budget - len(specials), 0)
    prefix_ids, prefix_cut = tokenizer.tail(prefix, room)
    suffix_ids, suffix_cut = tokenizer.head(suffix, room)
    keep_prefix, keep_suffix = split_budget(len(prefix_ids), len(suffix_ids), room)
    prefix_cut = prefix_cut or keep_prefix < len(prefix_ids)
    suffix_cut = suffix_cut or keep_suffix < len(suffix_ids)
    prefix_ids = prefix_ids[len(prefix_ids) - keep_prefix :]
    suffix_ids = suffix_ids[:keep_suffix]
    ids = [specials[0], *prefix_ids, specials[1], *suffix_ids, specials[2]]
    return Prompt(ids, len(prefix_ids), len(suffix_ids), prefix_cut, suffix_cut)
