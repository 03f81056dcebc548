"""The path of one suggestion: cursor context -> prompt -> model -> clean text.

Plain functions over plain data; the LSP handlers and the command line both call
``suggest`` so an editor and ``infill-ls complete`` see the same result.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .engine.base import Generation, GenerationRequest
from .postprocess import CursorContext, clean_suggestion, first_line_stop, wants_single_line
from .prompt import Prompt, PromptTokenizer, build_fim_prompt
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


def build_prompt(tokenizer: PromptTokenizer, template: FimTemplate, context: CursorContext, settings: Settings) -> Prompt:
    budget = settings.contextTokens - settings.maxNewTokens
    return build_fim_prompt(tokenizer, template, context.prefix, context.suffix, budget)


def suggest(
    engine,
    context: CursorContext,
    settings: Settings,
    cancel: threading.Event | None = None,
    deadline: float | None = None,
) -> SuggestionResult:
    started = time.perf_counter()
    single_line = wants_single_line(context, settings.multiline)
    prompt = build_prompt(engine.tokenizer, engine.template, context, settings)
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
