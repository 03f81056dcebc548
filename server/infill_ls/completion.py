"""The path of one suggestion: cursor context -> prompt -> model -> clean text.

Plain functions over plain data; the LSP handlers and the command line both call
``suggest`` so an editor and ``infill-ls complete`` see the same result.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .cache import SuggestionCache
from .engine.base import Generation, GenerationRequest
from .postprocess import CursorContext, cursor_syntax, finish_suggestion, stop_rule_for
from .prompt import Prompt, PromptTokenizer, build_fim_prompt
from .settings import Settings
from .templates import FimTemplate


@dataclass
class SuggestionResult:
    text: str | None  # what to insert at the cursor; None when there is no suggestion
    context: CursorContext
    single_line: bool
    prompt: Prompt | None  # None (with generation) when answered from the cache
    generation: Generation | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Characters right of the cursor (same line) that ``text`` replaces: auto-inserted closers it writes itself.
    replace_chars: int = 0


def build_prompt(tokenizer: PromptTokenizer, template: FimTemplate, context: CursorContext, settings: Settings) -> Prompt:
    budget = settings.contextTokens - settings.maxNewTokens
    return build_fim_prompt(tokenizer, template, context.prefix, context.suffix, budget)


def suggest(
    engine,
    context: CursorContext,
    settings: Settings,
    cancel: threading.Event | None = None,
    deadline: float | None = None,
    cache: SuggestionCache | None = None,
) -> SuggestionResult:
    started = time.perf_counter()
    syntax = cursor_syntax(context, settings.multiline)
    prompt = build_prompt(engine.tokenizer, engine.template, context, settings)
    prompt_done = time.perf_counter()
    generation = engine.generate(
        GenerationRequest(
            prompt_ids=prompt.ids,
            max_new_tokens=settings.maxNewTokens,
            stop_rule=stop_rule_for(context, syntax),
            cancel=cancel or threading.Event(),
            deadline=deadline,
        )
    )
    model_done = time.perf_counter()
    suggestion = None
    if generation.stop_reason != "cancelled":
        suggestion = finish_suggestion(generation.text, context, syntax)
    # A suggestion cut by the time box is partial: not worth replaying.
    if cache is not None and suggestion is not None and generation.stop_reason != "timeout":
        cache.store(context, settings, suggestion)
    finished = time.perf_counter()
    timings = {
        "prompt": (prompt_done - started) * 1000,
        "model": (model_done - prompt_done) * 1000,
        "prefill": generation.prefill_ms,
        "decode": generation.decode_ms,
        "postprocess": (finished - model_done) * 1000,
        "total": (finished - started) * 1000,
    }
    text, replace_chars = (suggestion.text, suggestion.replace_chars) if suggestion else (None, 0)
    return SuggestionResult(text, context, syntax.single_line, prompt, generation, timings, replace_chars)


def cached_suggestion(cache: SuggestionCache, context: CursorContext, settings: Settings) -> SuggestionResult | None:
    """The rest of a suggestion the user is typing through, without a model call."""
    started = time.perf_counter()
    hit = cache.lookup(context, settings)
    if hit is None:
        return None
    timings = {"total": (time.perf_counter() - started) * 1000}
    return SuggestionResult(hit.text, context, "\n" not in hit.text, None, None, timings, hit.replace_chars)
