"""Typed-through cache: typing the start of a shown suggestion is answered without the model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lsprotocol import types

from conftest import inline, open_document, server_status
from infill_ls.cache import SuggestionCache
from infill_ls.lru import LruDict
from infill_ls.postprocess import CursorContext, Suggestion
from infill_ls.settings import Settings

# How a generation ended; their sum is the number of model calls the server made.
GENERATION_ENDS = ("eos", "stop_token", "rule", "length", "cancelled", "timeout")


async def counters(client) -> tuple[int, int]:
    """(model calls, cache hits) so far."""
    counts = (await server_status(client))["counters"]
    return sum(counts.get(end, 0) for end in GENERATION_ENDS), counts.get("cacheHits", 0)


def type_text(client, uri: str, version: int, line: int, character: int, text: str) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=types.Position(line=line, character=character), end=types.Position(line=line, character=character)),
                    text=text,
                )
            ],
        )
    )


async def shown_suggestion(client, uri: str, line: int, character: int) -> str:
    items = (await inline(client, uri, line, character)).items
    return items[0].insert_text if items else ""


@pytest.mark.asyncio(loop_scope="module")
async def test_typing_through_a_suggestion_is_answered_from_the_cache(client):
    # The tiny model's text is arbitrary: take the first spot where it suggests a line of 3+ characters.
    for number, name in enumerate(["result", "total", "value", "count", "items", "data"]):
        uri = f"file:///work/typed_{number}.py"
        line_text = f"    {name} = "
        open_document(client, uri, f"def compute(values):\n{line_text}\n    return {name}\n")
        shown = await shown_suggestion(client, uri, 1, len(line_text))
        if len(shown) >= 3 and "\n" not in shown:
            break
    else:
        pytest.fail("the tiny model gave no one-line suggestion of 3+ characters at any spot")

    calls, hits = await counters(client)
    column = len(line_text)
    for version, typed in enumerate(shown[:2], start=2):  # type the first two characters, one at a time
        type_text(client, uri, version, 1, column, typed)
        column += 1
        assert await shown_suggestion(client, uri, 1, column) == shown[column - len(line_text):]
    assert await counters(client) == (calls, hits + 2)  # two hits, no model call

    # A character that departs from the suggestion needs the model again.
    departing = "Z" if shown[2] != "Z" else "Q"
    type_text(client, uri, 4, 1, column, departing)
    await shown_suggestion(client, uri, 1, column + 1)
    assert await counters(client) == (calls + 1, hits + 2)


def context(prefix: str, suffix: str) -> CursorContext:
    return CursorContext(prefix=prefix, suffix=suffix, language="python", document="file:///a.py")


def test_typing_over_an_auto_inserted_closer_the_suggestion_replaces():
    cache = SuggestionCache()
    settings = Settings(model="m")
    cache.store(context("x = max(", ")\n"), settings, Suggestion("a, b) + 1", replace_chars=1))
    assert cache.lookup(context("x = max(a", ")\n"), settings) == Suggestion(", b) + 1", replace_chars=1)
    # The editor types over its own ")" when the user types one: the closer leaves the suffix.
    assert cache.lookup(context("x = max(a, b)", "\n"), settings) == Suggestion(" + 1", replace_chars=0)


def test_no_hit_when_document_settings_or_text_differ():
    cache = SuggestionCache()
    settings = Settings(model="m")
    cache.store(context("y = ", "\n"), settings, Suggestion("compute(x)"))
    assert cache.lookup(context("y = ", "\n"), settings) is None  # nothing typed: not a typed-through request
    assert cache.lookup(context("y = co", "\n"), settings) == Suggestion("mpute(x)")
    assert cache.lookup(context("y = cx", "\n"), settings) is None  # typed something else
    assert cache.lookup(context("y = co", "\nz = 1\n"), settings) is None  # text after the cursor changed
    assert cache.lookup(context("y = compute(x)", "\n"), settings) is None  # all typed: ask the model
    assert cache.lookup(context("y = co", "\n"), Settings(model="other")) is None
    other_document = CursorContext(prefix="y = co", suffix="\n", language="python", document="file:///b.py")
    assert cache.lookup(other_document, settings) is None
    assert cache.hits == 1


def test_least_recently_used_entries_are_dropped():
    cache = SuggestionCache(size=2)
    settings = Settings(model="m")
    for name in ("a", "b", "c"):
        cache.store(context(f"{name} = ", "\n"), settings, Suggestion("1 + 2"))
    assert cache.lookup(context("a = 1", "\n"), settings) is None
    assert cache.lookup(context("c = 1", "\n"), settings) == Suggestion(" + 2")


def typed_through(entry_prefix: str, entry_suffix: str, suggestion: Suggestion, prefix: str, suffix: str):
    """The typed-through rule as the module docstring states it, without shortcuts."""
    if not prefix.startswith(entry_prefix) or not entry_suffix.endswith(suffix):
        return None
    typed, overtyped = prefix[len(entry_prefix):], len(entry_suffix) - len(suffix)
    if not suggestion.text.startswith(typed) or not 0 <= overtyped <= suggestion.replace_chars:
        return None
    if (not typed and not overtyped) or not suggestion.text[len(typed):].strip():
        return None
    return Suggestion(suggestion.text[len(typed):], suggestion.replace_chars - overtyped)


@given(
    before=st.text("ab(\n ", max_size=6), text=st.text("ab() \n", min_size=2, max_size=8),
    replace=st.integers(0, 2), after=st.text(")]\n", max_size=4),
    typed_chars=st.integers(0, 4), extra=st.sampled_from(["", "", "", "a", ")", " b"]),
    cut=st.sampled_from([0, 0, 0, 1, 3]), overtyped=st.integers(0, 3), new_suffix=st.sampled_from([None, None, "", ")\n"]),
)
def test_lookup_follows_the_typed_through_rule(before, text, replace, after, typed_chars, extra, cut, overtyped, new_suffix):
    """The lookup checks lengths first to stay cheap on big files; it must answer like the rule."""
    cache, settings = SuggestionCache(), Settings(model="m")
    suggestion = Suggestion(text, replace_chars=min(replace, len(after)))
    cache.store(context(before, after), settings, suggestion)
    # Mostly the suggestion's start typed at the same place; sometimes more, other text, or elsewhere.
    prefix = before[: len(before) - cut] + text[:typed_chars] + extra
    suffix = after[overtyped:] if new_suffix is None else new_suffix
    expected = typed_through(before, after, suggestion, prefix, suffix)
    assert cache.lookup(context(prefix, suffix), settings) == expected


def test_lru_dict_forgets_the_least_recently_used():
    lru = LruDict(2)
    lru["a"], lru["b"] = 1, 2
    assert lru.get("a") == 1  # read: now the newest
    lru["c"] = 3
    assert list(lru) == ["a", "c"] and lru.get("b") is None
    lru["a"] = 4  # rewritten: the newest again
    lru["d"] = 5
    assert dict(lru) == {"a": 4, "d": 5}
