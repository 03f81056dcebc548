"""What every engine takes and returns."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

# Given the text generated so far, where to cut it (an index), or None to go on.
StopRule = Callable[[str], Optional[int]]


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    stop_rule: StopRule | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None  # time.monotonic() after which the text so far is returned
    prompt_lookup: bool = False  # speculative decoding with drafts copied from the prompt


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    # eos | stop_token | rule | length | cancelled | timeout
    stop_reason: str
    prompt_tokens: int
    reused_tokens: int = 0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    draft_tokens: int = 0  # tokens proposed by prompt lookup
    accepted_draft_tokens: int = 0  # of which the model confirmed
    path: str = "dynamic"  # dynamic (eager, transformers cache) | static (fast decoding)


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to do."""


class EngineOutOfMemory(RuntimeError):
    """The device ran out of memory during a generation; a smaller prompt may fit."""
