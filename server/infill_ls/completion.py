"""The path of one suggestion: cursor context -> prompt -> model -> clean text.

Plain functions over plain data; the LSP handlers and the command line both call
``suggest`` so an editor and ``infill-ls complete`` see the same result.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

from .cache import SuggestionCache
from .engine.base import EngineOutOfMemory, Generation, GenerationRequest
from .postprocess import CursorContext, cursor_syntax, finish_suggestion, stop_rule_for
from .prompt import Prompt, PromptTokenizer, RepoContext, build_fim_prompt
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
    retried_smaller: bool = False  # the first try ran out of device memory; this one used half the prompt


def build_prompt(
    tokenizer: PromptTokenizer,
    template: FimTemplate,
    context: CursorContext,
    settings: Settings,
    repo: RepoContext | None = None,
) -> Prompt:
    budget = settings.contextTokens - settings.maxNewTokens
    return build_fim_prompt(tokenizer, template, context.prefix, context.suffix, budget, repo)


def suggest(
    engine,
    context: CursorContext,
    settings: Settings,
    cancel: threading.Event | None = None,
    deadline: float | None = None,
    repo: RepoContext | None = None,
    cache: SuggestionCache | None = None,
) -> SuggestionResult:
    started = time.perf_counter()
    limit = getattr(engine, "max_context_tokens", None)
    if limit and settings.contextTokens > limit and limit - settings.maxNewTokens >= 32:
        settings = dataclasses.replace(settings, contextTokens=limit)
    syntax = cursor_syntax(context, settings.multiline)
    syntax_done = time.perf_counter()
    prompt = build_prompt(engine.tokenizer, engine.template, context, settings, repo)
    prompt_done = time.perf_counter()
    generation = engine.generate(
        GenerationRequest(
            prompt_ids=prompt.ids,
            max_new_tokens=settings.maxNewTokens,
            stop_rule=stop_rule_for(context, syntax),
            cancel=cancel or threading.Event(),
            deadline=deadline,
            prompt_lookup=settings.promptLookup,
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
        "syntax": (syntax_done - started) * 1000,
        "prompt": (prompt_done - syntax_done) * 1000,
        "model": (model_done - prompt_done) * 1000,
        "prefill": generation.prefill_ms,
        "decode": generation.decode_ms,
        "postprocess": (finished - model_done) * 1000,
        "total": (finished - started) * 1000,
    }
    text, replace_chars = (suggestion.text, suggestion.replace_chars) if suggestion else (None, 0)
    return SuggestionResult(text, context, syntax.single_line, prompt, generation, timings, replace_chars=replace_chars)


def cached_suggestion(cache: SuggestionCache, context: CursorContext, settings: Settings) -> SuggestionResult | None:
    """The rest of a suggestion the user is typing through, without a model call."""
    started = time.perf_counter()
    hit = cache.lookup(context, settings)
    if hit is None:
        return None
    timings = {"total": (time.perf_counter() - started) * 1000}
    return SuggestionResult(hit.text, context, "\n" not in hit.text, None, None, timings, replace_chars=hit.replace_chars)


def suggest_retrying_smaller(engine, context: CursorContext, settings: Settings, **options) -> SuggestionResult:
    """``suggest``, retried once with half the prompt budget when the device runs out of memory.

    Out of memory mid-request is most often the KV cache of a long prompt; the
    retried result has ``retried_smaller`` set so the caller can tell the user.
    """
    try:
        return suggest(engine, context, settings, **options)
    except EngineOutOfMemory:
        budget = settings.contextTokens - settings.maxNewTokens
        smaller = dataclasses.replace(settings, contextTokens=settings.maxNewTokens + max(budget // 2, 32))
        result = suggest(engine, context, smaller, **options)
        result.retried_smaller = True
        return result
