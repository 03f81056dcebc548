"""The local engine: a transformers causal LM kept loaded, decoded greedily.

A hand-written greedy loop (rather than ``model.generate``) lets every step check
the request's cancel flag, deadline and stop rules, and lets consecutive requests
reuse the KV cache of their common token prefix.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..hardware import Placement, bitsandbytes_available, choose_placement
from ..prompt import PromptTokenizer
from ..settings import Settings
from ..templates import FimTemplate, TemplateError, choose_template
from .base import Generation, GenerationRequest, ModelLoadError

log = logging.getLogger(__name__)

# report(message, percentage) — drives the editor's progress bar.
ProgressReport = Callable[[str, int], None]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    device: str
    precision: str
    reason: str
    parameters: int
    template: str


def count_parameters(config) -> int:
    """Parameters of the model ``config`` describes, counted without allocating weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def quantization_config(precision: str):
    if precision not in ("8bit", "4bit"):
        return None
    if not bitsandbytes_available():
        raise ModelLoadError(f"{precision} needs bitsandbytes: pip install 'infill-ls[gpu]'")
    import torch
    from transformers import BitsAndBytesConfig

    if precision == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def resolve_model_source(model: str) -> str:
    """A local directory as an absolute path, a hub id unchanged; a clear error for a missing directory."""
    expanded = Path(model).expanduser()
    if expanded.exists():
        if not (expanded / "config.json").exists():
            raise ModelLoadError(f"model directory {expanded} has no config.json (is it a transformers checkpoint?)")
        return str(expanded.resolve())
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelLoadError(f"model directory {expanded} does not exist")
    return model


def load_tokenizer(settings: Settings) -> tuple[PromptTokenizer, FimTemplate]:
    """The model's tokenizer and FIM template, without loading any weights."""
    from transformers import AutoTokenizer

    source = resolve_model_source(settings.model)
    try:
        tokenizer = PromptTokenizer(AutoTokenizer.from_pretrained(source, trust_remote_code=settings.trustRemoteCode))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the tokenizer of {settings.model}: {error}") from error
    return tokenizer, choose_template(settings.template, tokenizer.vocabulary)


class LocalEngine:
    def __init__(self, model, tokenizer: PromptTokenizer, template: FimTemplate, info: ModelInfo):
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.info = info
        eos = tokenizer.tokenizer.eos_token_id
        self.stop_ids = {tokenizer.vocabulary[t] for t in template.stop if t in tokenizer.vocabulary}
        if eos is not None:
            self.stop_ids.add(eos)
        self.device = next(model.parameters()).device
        self.sliding_window = getattr(model.config, "sliding_window", None)
        # The prompt cache: token ids whose keys/values ``_cache`` holds.
        self._cache = None
        self._cache_ids: list[int] = []
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings, report: ProgressReport = lambda message, percent: None) -> "LocalEngine":
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        source = resolve_model_source(settings.model)
        trust = settings.trustRemoteCode
        try:
            report(f"reading {settings.model}", 5)
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust)
            parameters = count_parameters(config)
            placement: Placement = choose_placement(settings.device, settings.quantization, parameters)
            log.info("placement for %s: %s %s (%s)", settings.model, placement.device, placement.precision, placement.reason)
            report("loading tokenizer", 15)
            tokenizer, template = load_tokenizer(settings)
            report(f"loading weights ({placement.precision} on {placement.device})", 30)
            dtype = torch.float32 if placement.precision == "float32" else torch.bfloat16
            model = AutoModelForCausalLM.from_pretrained(
                source,
                dtype=dtype,
                device_map=placement.device,
                quantization_config=quantization_config(placement.precision),
                trust_remote_code=trust,
            )
            model.eval()
        except (ModelLoadError, TemplateError):
            raise
        except torch.cuda.OutOfMemoryError as error:
            raise ModelLoadError(f"out of GPU memory loading {settings.model}; try quantization 8bit or 4bit ({error})")
        except OSError as error:
            # transformers says "not a local folder and not a valid model identifier" or "offline".
            raise ModelLoadError(f"cannot load {settings.model}: {error}") from error
        except Exception as error:  # a corrupt checkpoint raises anything from safetensors to json
            raise ModelLoadError(f"cannot load {settings.model}: {type(error).__name__}: {error}") from error
        report("ready", 100)
        info = ModelInfo(
            name=settings.model,
            device=placement.device,
            precision=placement.precision,
            reason=placement.reason,
            parameters=parameters,
            template=template.name,
        )
        return cls(model, tokenizer, template, info)

    # ----- generation -----

    def generate(self, request: GenerationRequest) -> Generation:
        import torch

        with self._lock, torch.inference_mode():
            return self._generate(request)

    def _reusable_tokens(self, ids: list[int], max_new_tokens: int) -> int:
        """How many leading tokens of ``ids`` the cached keys/values already cover."""
        if self._cache is None:
            return 0
        longest = max(len(self._cache_ids), len(ids)) + max_new_tokens
        # Rolling a sliding-window layer back past its window is not possible.
        if self.sliding_window and longest >= self.sliding_window:
            return 0
        common = 0
        for old, new in zip(self._cache_ids, ids):
            if old != new:
                break
            common += 1
        # Recompute the last common token: the logits of the next position are needed,
        # and BPE may merge differently across the seam of an edit.
        return max(common - 1, 0)

    def _forward(self, ids: list[int], cache):
        import torch

        input_ids = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1]

    def _generate(self, request: GenerationRequest) -> Generation:
        from transformers import DynamicCache

        ids = request.prompt_ids
        if request.cancel.is_set():  # superseded while it waited for the worker
            return Generation(text="", token_ids=[], stop_reason="cancelled", prompt_tokens=len(ids))
        started = time.perf_counter()
        reuse = self._reusable_tokens(ids, request.max_new_tokens)
        if reuse:
            self._cache.crop(-(len(self._cache_ids) - reuse))
            cache = self._cache
        else:
            cache = DynamicCache(config=self.model.config)
        # Forget the cache while it is being changed: an exception leaves no stale state.
        self._cache, self._cache_ids = None, []
        logits = self._forward(ids[reuse:], cache)
        cache_ids = list(ids)
        prefill_done = time.perf_counter()

        generated: list[int] = []
        text = ""
        reason = "length"
        while True:
            next_id = int(logits.argmax())
            if next_id in self.stop_ids:
                reason = "eos"
                break
            generated.append(next_id)
            text = self.tokenizer.decode(generated)
            if request.stop_rule is not None:
                cut = request.stop_rule(text)
                if cut is not None:
                    text = text[:cut]
                    reason = "rule"
                    break
            if len(generated) >= request.max_new_tokens:
                break
            if request.cancel.is_set():
                reason = "cancelled"
                break
            if request.deadline is not None and time.monotonic() >= request.deadline:
                reason = "timeout"
                break
            logits = self._forward([next_id], cache)
            cache_ids.append(next_id)
        self._cache, self._cache_ids = cache, cache_ids
        finished = time.perf_counter()
        return Generation(
            text=text,
            token_ids=generated,
            stop_reason=reason,
            prompt_tokens=len(ids),
            reused_tokens=reuse,
            prefill_ms=(prefill_done - started) * 1000,
            decode_ms=(finished - prefill_done) * 1000,
        )

    def clear_prompt_cache(self) -> None:
        with self._lock:
            self._cache, self._cache_ids = None, []
