"""Prompt building and budgeting with the tiny model's real tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from infill_ls.prompt import PromptTokenizer, build_fim_prompt, split_budget
from infill_ls.templates import STARCODER2, TemplateError, choose_template


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return PromptTokenizer(AutoTokenizer.from_pretrained(tiny_model))


def test_special_tokens_are_single_ids_of_the_vocabulary(tokenizer):
    prompt = build_fim_prompt(tokenizer, STARCODER2, "def f(", "):\n", 100)
    vocab = tokenizer.tokenizer.get_vocab()
    assert prompt.ids[0] == vocab["<fim_prefix>"]
    assert prompt.ids[-1] == vocab["<fim_middle>"]
    assert prompt.ids.count(vocab["<fim_suffix>"]) == 1
    assert tokenizer.decode(prompt.ids) == "<fim_prefix>def f(<fim_suffix>):\n<fim_middle>"


def test_special_token_text_in_a_file_is_not_a_control_token(tokenizer):
    prompt = build_fim_prompt(tokenizer, STARCODER2, "x = '<fim_middle>'\n", "", 100)
    middle = tokenizer.tokenizer.get_vocab()["<fim_middle>"]
    assert prompt.ids.count(middle) == 1  # only the template's own


def test_long_file_keeps_the_text_next_to_the_cursor(tokenizer):
    prefix = "".join(f"line_{i} = {i}\n" for i in range(3000)) + "value = compute("
    suffix = ")\n" + "".join(f"after_{i} = {i}\n" for i in range(3000))
    prompt = build_fim_prompt(tokenizer, STARCODER2, prefix, suffix, 300)
    text = tokenizer.decode(prompt.ids)
    assert len(prompt) <= 300
    assert prompt.prefix_cut and prompt.suffix_cut
    assert "line_2999 = 2999\nvalue = compute(<fim_suffix>)\nafter_0 = 0\n" in text
    assert "line_0 = 0\n" not in text and "after_2999" not in text


def test_short_suffix_leaves_its_share_to_the_prefix():
    assert split_budget(1000, 10, 200) == (190, 10)
    assert split_budget(10, 1000, 200) == (10, 190)
    assert split_budget(1000, 1000, 200) == (150, 50)
    assert split_budget(5, 6, 200) == (5, 6)


@hsettings(max_examples=60, deadline=None)
@given(prefix=st.text(max_size=3000), suffix=st.text(max_size=3000), budget=st.integers(min_value=3, max_value=600))
def test_prompt_never_exceeds_the_budget(tokenizer, prefix, suffix, budget):
    prompt = build_fim_prompt(tokenizer, STARCODER2, prefix, suffix, budget)
    assert len(prompt) <= budget
    kept_prefix = tokenizer.decode(prompt.ids[1 : 1 + prompt.prefix_tokens])
    if not prompt.prefix_cut:
        assert kept_prefix == prefix
    else:  # the end of the prefix (a cut inside a character decodes to U+FFFD)
        assert prefix.endswith(kept_prefix.lstrip("\ufffd"))


@hsettings(max_examples=80, deadline=None)
@given(prefix_lines=st.integers(0, 400), suffix_lines=st.integers(0, 400), budget=st.integers(min_value=40, max_value=900),
       word=st.sampled_from(["x", "value = compute(", "    return self.items[index]  # é", "\t\t"]))
def test_the_suffix_keeps_the_first_tokens_of_its_encoding_and_its_share(tokenizer, prefix_lines, suffix_lines, budget, word):
    """The suffix in the prompt is the start of the suffix's own encoding; it keeps at least its
    share of the room (a quarter) and, after a prefix that fits whole, all the room the prefix leaves."""
    prefix = "".join(f"{word}{i}\n" for i in range(prefix_lines))
    suffix = "".join(f"{i}{word}\n" for i in range(suffix_lines))
    prompt = build_fim_prompt(tokenizer, STARCODER2, prefix, suffix, budget)
    full = tokenizer.tokenizer(suffix, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    start = 2 + prompt.prefix_tokens  # after <fim_prefix>, the prefix and <fim_suffix>
    assert prompt.ids[start : start + prompt.suffix_tokens] == full[: prompt.suffix_tokens]
    assert prompt.suffix_cut == (prompt.suffix_tokens < len(full))
    room = budget - 3  # the plain layout's three control tokens
    assert prompt.suffix_tokens >= min(len(full), int(room * 0.25))
    if not prompt.prefix_cut:
        assert prompt.suffix_tokens == min(len(full), room - prompt.prefix_tokens)


def test_template_choice_needs_the_fim_tokens(tokenizer):
    assert choose_template("auto", tokenizer.vocabulary).name == "starcoder2"
    with pytest.raises(TemplateError, match="no fill-in-the-middle tokens"):
        choose_template("auto", {"a": 0})
    with pytest.raises(TemplateError, match="unknown template"):
        choose_template("gpt", tokenizer.vocabulary)


REAL_SOURCE = (Path(__file__).resolve().parent.parent / "server" / "infill_ls" / "context.py").read_text()


@hsettings(max_examples=60, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=len(REAL_SOURCE) - 2000),
    typed=st.lists(st.sampled_from(list("abc_(). :\n\t'\"é🐍0123456789") + ["    ", "\n    ", "def "]), max_size=40),
    deletions=st.integers(min_value=0, max_value=30),
)
def test_incremental_encoding_gives_the_ids_of_a_full_encoding(tiny_model, start, typed, deletions):
    """Typing and deleting at the end of a long text, as an editor's keystrokes do: every
    reused encoding equals the tokenizer's own encoding of the whole text."""
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(tiny_model)
    incremental = PromptTokenizer(raw)
    text = REAL_SOURCE[start:start + 1500]
    steps = [text]
    for piece in typed:
        text += piece
        steps.append(text)
    for _ in range(deletions):
        text = text[:-1]
        steps.append(text)
    for step in steps:
        expected = raw(step, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert incremental.encode(step) == expected


def test_a_keystroke_encodes_only_the_end_of_the_prefix_window(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = PromptTokenizer(AutoTokenizer.from_pretrained(tiny_model))
    prefix = REAL_SOURCE[:20_000]
    first, cut = tokenizer.tail(prefix, 400)
    assert cut
    before = tokenizer.encoded_chars
    second, _ = tokenizer.tail(prefix + "x", 400)
    typed_cost = tokenizer.encoded_chars - before
    # The window is ~1,600+ characters; a keystroke re-encodes only the last tokens.
    assert 0 < typed_cost < 200, typed_cost
    assert second == tokenizer.tokenizer(prefix + "x", add_special_tokens=False)["input_ids"][-400:]


def test_a_tokenizer_that_prepends_a_space_is_never_encoded_in_pieces():
    """SentencePiece-style tokenizers (CodeLlama's "▁" before every text) would get a stray
    token at a reuse seam: PromptTokenizer notices and encodes whole texts for them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([REAL_SOURCE], trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>"]))
    raw = PreTrainedTokenizerFast(tokenizer_object=tok)
    prompt_tokenizer = PromptTokenizer(raw)
    text = REAL_SOURCE[:3000]
    for typed in ("", "x", "xy", "xy(", "xy(z"):
        assert prompt_tokenizer.encode(text + typed) == raw(text + typed, add_special_tokens=False)["input_ids"]
    # Its texts' lengths come from decoding (no byte-level table for "▁" tokens).
    assert prompt_tokenizer.characters_in(raw(text, add_special_tokens=False)["input_ids"]) == len(text)


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("ab_(). :\n\t'\"é中🐍🏽\u0301\x00\x7f0") + ["    ", "def "]), max_size=80).map("".join))
def test_the_length_of_a_run_of_tokens_is_its_decoded_length(tokenizer, text):
    """stable_tail sums per-token character counts instead of decoding (byte-level BPE)."""
    assert tokenizer._token_chars is not None  # the tiny model's tokenizer is byte-level
    assert tokenizer.characters_in(tokenizer.encode(text)) == len(tokenizer.decode(tokenizer.encode(text))) == len(text)


def test_added_tokens_outside_the_byte_alphabet_keep_the_fast_length_count():
    """DeepSeek-Coder's FIM markers (full-width bars, "▁") are added tokens, not byte-level
    ones: the per-token character counts still apply to the file text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    marker = "<｜fim▁begin｜>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([REAL_SOURCE], trainers.BpeTrainer(vocab_size=600, special_tokens=[marker],
                                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    prompt_tokenizer = PromptTokenizer(PreTrainedTokenizerFast(tokenizer_object=tok))
    assert prompt_tokenizer._token_chars is not None
    text = REAL_SOURCE[:2000] + " é 中 🐍 " + marker
    assert prompt_tokenizer.characters_in(prompt_tokenizer.encode(text)) == len(text)
