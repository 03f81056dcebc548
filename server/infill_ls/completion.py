"""The path of one suggestion: cursor context -> prompt -> model -> clean text.

Plain functions over plain data; the LSP handlers and the command line both call
``suggest`` so an editor and ``infill-ls complete`` see the same result.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

from .engine.base import EngineOutOfMemory, Generation, GenerationRequest
from .postprocess import CursorContext, clean_suggestion, first_line_stop, wants_single_line
from .prompt import Prompt, PromptTokenizer, RepoContext, build_fim_prompt
from .settings import Settings
from .templates import FimTemplate


@dataclass
class SuggestionResult:
    text: str | None  # what to insert at the cursor; None when there is no suggestion
    context: CursorContext
    single_line: bool
    prompt: Prompt
    generation: Generation
    timings_ms: dict[str, float] = field(default_factory=dict)
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
) -> SuggestionResult:
    started = time.perf_counter()
    single_line = wants_single_line(context, settings.multiline)
    prompt = build_prompt(engine.tokenizer, engine.template, context, settings, repo)
    prompt_done = time.perf_counter()
    generation = engine.generate(
        GenerationRequest(
            prompt_ids=prompt.ids,
            max_new_tokens=settings.maxNewTokens,
            stop_rule=first_line_stop if single_line else None,
            cancel=cancel or threading.Event(),
            deadline=deadline,
        )
    )
    model_done = time.perf_counter()
    text = None
    if generation.stop_reason != "cancelled":
        text = clean_suggestion(generation.text, context, single_line)
    finished = time.perf_counter()
    timings = {
        "prompt": (prompt_done - started) * 1000,
        "model": (model_done - prompt_done) * 1000,
        "prefill": generation.prefill_ms,
        "decode": generation.decode_ms,
        "postprocess": (finished - model_done) * 1000,
        "total": (finished - started) * 1000,
    }
    return SuggestionResult(text, context, single_line, prompt, generation, timings)


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
