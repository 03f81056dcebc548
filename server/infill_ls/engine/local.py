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
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..hardware import Placement, bitsandbytes_available, choose_placement, cpu_threads
from ..prompt import PromptTokenizer
from ..settings import Settings
from ..templates import FimTemplate, TemplateError, choose_template
from ..debug import injected_faults
from .base import EngineOutOfMemory, Generation, GenerationRequest, ModelLoadError

log = logging.getLogger(__name__)

# Tokens copied from the prompt per speculative step (prompt lookup).
DRAFT_TOKENS = 8
# The compiled decoder's step sizes: one token, and a whole draft check (shorter steps are padded).
FAST_STEP_SIZES = (1, DRAFT_TOKENS + 1)


class DraftBackoff:
    """When to try a prompt-lookup draft: every step, until drafts go wholly rejected; then
    skip 1, 3, 7, ... steps (doubling) until one is accepted in part.  A rejected draft
    costs a step wider than one token for nothing (on a busy CPU ~40 % more; on a GPU's
    eager path, measured in bench/gpu.py, far more), and a generation whose drafts keep
    missing is copying nothing from its prompt."""

    def __init__(self) -> None:
        self.misses = 0  # wholly rejected drafts in a row
        self.wait = 0  # steps still to skip

    def try_now(self) -> bool:
        if self.wait:
            self.wait -= 1
            return False
        return True

    def record(self, drafted: int, accepted: int) -> None:
        if not drafted:
            return
        if accepted:
            self.misses = 0
        else:
            self.misses += 1
            self.wait = 2**self.misses - 1


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


# Precisions that decode on the eager path even with fastDecode: bitsandbytes' layers are
# opaque to the compiler's fusion (never measured compiled).  int8wo and int4wo compile
# since they decode on gemv.py's Triton kernels: int8wo 9.1 and int4wo 8.6 ms/token
# compiled against 36.9 and 43.5 eager (H200, bench/gpu.py, 2026-11-26).  fp8 compiles
# (torch._scaled_mm is an operator inductor knows; the activations' conversion fuses).
EAGER_ONLY = frozenset({"8bit", "4bit"})


def compiles_faster(model, precision: str) -> bool:
    """Whether fastDecode compiles this model's decode step (see EAGER_ONLY)."""
    if precision in EAGER_ONLY:
        return False
    if precision in ("int8wo", "int4wo"):
        # Only on gemv.py's kernels: compiled, the plain modules lost to eager (152.7 vs
        # 59.6 ms, H100), and so did tinygemm (59.5 vs 23.0, H200).
        from .quantize import on_triton_kernels

        return on_triton_kernels(model)
    return True


def static_cache_tokens(model, settings: Settings) -> int:
    """Slots of the static KV cache, allocated whole: the longest prompt plus its answer and a
    draft — contextTokens, which prompts are cut to the model's positions (completion.py)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    return min(settings.contextTokens, positions or settings.contextTokens) + DRAFT_TOKENS + 1


def load_weights(source: str, placement: Placement, trust: bool):
    """The model at ``placement``'s device and precision, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    precision = placement.precision
    float_dtype = torch.float32 if placement.device == "cpu" else torch.bfloat16
    dtype = {"float32": torch.float32, "bf16": torch.bfloat16}.get(precision, float_dtype)
    # Our own quantizers work on a model loaded on the CPU, then moved: the GPU never
    # holds the full-precision weights.
    own_quantizer = precision in ("int8wo", "int4wo", "int8dyn", "fp8")
    model = AutoModelForCausalLM.from_pretrained(
        source,
        dtype=dtype,
        device_map="cpu" if own_quantizer else placement.device,
        quantization_config=quantization_config(precision),
        trust_remote_code=trust,
    )
    model.eval()
    if own_quantizer:
        # Imported here: quantize.py brings in gemv.py and with it Triton, which a bf16 or
        # bitsandbytes load does not need.
        from . import gemv
        from .quantize import quantize_weights, tune_fp8, use_kernels

        quantize_weights(model, precision)
        model.to(placement.device)
        if precision in ("int8wo", "int4wo") and placement.device.startswith("cuda"):  # see quantize.py: not on the CPU
            kind = "triton" if gemv.available() else "tinygemm"
            log.info("weight-only linears on %s: %s", kind, use_kernels(model, dtype, kind))
        elif precision == "fp8" and placement.device.startswith("cuda"):
            log.info("fp8 linears: %s", tune_fp8(model, dtype))
    return model


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
        # The longest sequence the model was trained on: prompts beyond it only hurt.
        self.max_context_tokens: int | None = getattr(model.config, "max_position_embeddings", None)
        eos = tokenizer.tokenizer.eos_token_id
        self.stop_ids = {tokenizer.vocabulary[t] for t in template.stop if t in tokenizer.vocabulary}
        if eos is not None:
            self.stop_ids.add(eos)
        self.device = next(model.parameters()).device
        # The prompt cache: a DynamicSession or StaticSession and the token ids it holds.
        self._kv = None
        self._cache_ids: list[int] = []
        self.fast = None  # a fast.StaticDecoder once fast decoding is set up
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings, report: ProgressReport = lambda message, percent: None) -> "LocalEngine":
        import torch
        from transformers import AutoConfig

        source = resolve_model_source(settings.model)
        trust = settings.trustRemoteCode
        try:
            report(f"reading {settings.model}", 5)
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust)
            parameters = count_parameters(config)
            placement: Placement = choose_placement(settings.device, settings.quantization, parameters)
            log.info("placement for %s: %s %s (%s)", settings.model, placement.device, placement.precision, placement.reason)
            threads = cpu_threads(parameters) if placement.device == "cpu" else None
            if threads:
                torch.set_num_threads(threads)
            report("loading tokenizer", 15)
            tokenizer, template = load_tokenizer(settings)
            report(f"loading weights ({placement.precision} on {placement.device})", 30)
            model = load_weights(source, placement, trust)
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
        engine = cls(model, tokenizer, template, info)
        if settings.fastDecode and placement.device.startswith("cuda") and compiles_faster(model, placement.precision):
            engine.start_fast_decoding(static_cache_tokens(model, settings))
        elif settings.fastDecode and placement.device == "cpu":
            # The static cache, uncompiled: a quarter less time per decoded token than
            # transformers' dynamic cache on a CPU (the bundled model, 1 thread: bf16 3.3-3.6
            # against 4.6-4.8 ms, the old int8dyn 2.7 against 3.8), the same prefill.  Compiling
            # it gained ~10 % more after a 25 s compile: not done.  (A Xeon without AMX,
            # 2026-11-27: about even, float32 6.95 against 7.07 ms, until one-token steps lost
            # a needless mask in fast.py: 5.31 against 7.22, bench/results/cpu-20261127-045323.json.)
            engine.start_fast_decoding(static_cache_tokens(model, settings), compile=False)
        return engine

    # ----- generation -----

    def generate(self, request: GenerationRequest) -> Generation:
        import torch

        with self._lock, torch.inference_mode():
            try:
                return self._generate(request)
            except torch.cuda.OutOfMemoryError as error:
                # _generate dropped its cache before the failing forward; give the memory back.
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise EngineOutOfMemory(f"out of GPU memory with a {len(request.prompt_ids)}-token prompt: {error}") from error

    def _session(self, ids: list[int], max_new_tokens: int):
        """The KV cache to generate ``ids`` with and how many of its leading tokens it already holds."""
        needed = len(ids) + max_new_tokens + DRAFT_TOKENS + 1
        fast = self.fast if self.fast is not None and self.fast.ready.is_set() else None
        kind = "static" if fast is not None and needed <= fast.max_tokens else "dynamic"
        session = self._kv
        # Forget the cache while it is being changed: an exception leaves no stale state.
        self._kv, cached_ids = None, self._cache_ids
        self._cache_ids = []
        if session is not None and session.kind == kind and session.can_truncate_after(0):
            reuse = reusable_tokens(cached_ids, ids)
            session.truncate(reuse)
            return session, reuse
        if kind == "static":
            from .fast import StaticSession

            return StaticSession(fast), 0
        return DynamicSession(self.model, self.device), 0

    def _generate(self, request: GenerationRequest) -> Generation:
        ids = request.prompt_ids
        if request.cancel.is_set():  # superseded while it waited for the worker
            return Generation(text="", token_ids=[], stop_reason="cancelled", prompt_tokens=len(ids))
        if request.deadline is not None and time.monotonic() >= request.deadline:
            return Generation(text="", token_ids=[], stop_reason="timeout", prompt_tokens=len(ids))
        started = time.perf_counter()
        session, reuse = self._session(ids, request.max_new_tokens)

        def forward(step_ids: list[int], keep: int):
            injected_faults.maybe_raise()  # fault-injection hook for tests: a no-op unless INFILL_LS_INJECT_FAULT is set
            return session.forward(step_ids, keep)

        # Reading the first token waits for the prefill on a GPU: prefill_ms is its real time.
        token = int(forward(ids[reuse:], keep=1)[-1].argmax())
        cache_ids = list(ids)  # the tokens whose keys/values ``session`` holds
        prefill_done = time.perf_counter()

        generated: list[int] = []
        state = {"text": ""}
        drafted = accepted_total = 0
        backoff = DraftBackoff()

        def take(token: int) -> str | None:
            """Append one greedy token; the stop reason when generation must end here."""
            if token in self.stop_ids:
                return "eos"
            generated.append(token)
            state["text"] = self.tokenizer.decode(generated)
            if request.stop_rule is not None:
                cut = request.stop_rule(state["text"])
                if cut is not None:
                    state["text"] = state["text"][:cut]
                    return "rule"
            if len(generated) >= request.max_new_tokens:
                return "length"
            if request.cancel.is_set():
                return "cancelled"
            if request.deadline is not None and time.monotonic() >= request.deadline:
                return "timeout"
            return None

        while True:
            reason = take(token)
            if reason:
                break
            draft: list[int] = []
            room = request.max_new_tokens - len(generated)
            if request.prompt_lookup and room > 1 and session.can_truncate_after(DRAFT_TOKENS + 1) and backoff.try_now():
                draft = lookup_draft(cache_ids + [token], min(DRAFT_TOKENS, room - 1))
            # One forward checks every draft token: row i is the model's choice after input i.
            rows = forward([token, *draft], keep=len(draft) + 1)
            cache_ids += [token, *draft]
            predicted = rows.argmax(-1).tolist()
            accepted = 0
            while accepted < len(draft) and predicted[accepted] == draft[accepted]:
                accepted += 1
            if accepted < len(draft):
                del cache_ids[len(cache_ids) - (len(draft) - accepted):]
                session.truncate(len(cache_ids))
            drafted += len(draft)
            accepted_total += accepted
            backoff.record(len(draft), accepted)
            for verified in draft[:accepted]:
                reason = take(verified)
                if reason:
                    break
            if reason:
                break
            token = predicted[accepted]  # (read once above: another argmax would wait on the GPU again)
        self._kv, self._cache_ids = session, cache_ids
        finished = time.perf_counter()
        return Generation(
            text=state["text"],
            token_ids=generated,
            stop_reason=reason,
            prompt_tokens=len(ids),
            reused_tokens=reuse,
            prefill_ms=(prefill_done - started) * 1000,
            decode_ms=(finished - prefill_done) * 1000,
            draft_tokens=drafted,
            accepted_draft_tokens=accepted_total,
            path=session.kind,
        )

    def clear_prompt_cache(self) -> None:
        with self._lock:
            self._kv, self._cache_ids = None, []

    # ----- fast decoding -----

    def start_fast_decoding(self, max_tokens: int, compile: bool = True) -> None:
        """Set up the static-cache decoder; compile it in the background (or use it uncompiled)."""
        from . import fast

        if not fast.supports(self.model):
            log.info("fast decoding: %s has an unknown layout; staying on the eager path", type(self.model).__name__)
            return
        decoder = fast.StaticDecoder(self.model, max_tokens, step_sizes=FAST_STEP_SIZES)
        self.fast = decoder
        if compile:
            decoder.compile_in_background(exclusive=self._lock)
        else:
            decoder.ready.set()


def reusable_tokens(cached: list[int], ids: list[int]) -> int:
    """How many leading tokens of ``ids`` to keep from a cache holding ``cached``."""
    common = 0
    for old, new in zip(cached, ids):
        if old != new:
            break
        common += 1
    # Recompute the last common token: the logits of the next position are needed,
    # and BPE may merge differently across the seam of an edit.
    return max(common - 1, 0)


def lookup_draft(sequence: list[int], limit: int, max_ngram: int = 3) -> list[int]:
    """Prompt-lookup drafting: the tokens that followed the latest earlier occurrence of the sequence's tail.

    Code completions often repeat what the file already holds (a name, an argument
    list, a similar line), so copying it is a cheap guess the model then verifies.
    """
    last = sequence[-1]
    for n in range(max_ngram, 0, -1):
        if len(sequence) <= n:
            continue
        tail = sequence[-n:]
        for start in range(len(sequence) - n - 1, -1, -1):
            if sequence[start + n - 1] == last and sequence[start:start + n] == tail:
                return sequence[start + n:start + n + limit]
    return []


def cache_keyword(model) -> str:
    """The forward() argument that takes a KV cache: ``cache`` from transformers 5.2x,
    ``past_key_values`` before (5.17, on the GPU machines, silently ignores ``cache=``)."""
    return _cache_keyword_of(type(model))


@lru_cache(maxsize=None)
def _cache_keyword_of(model_class) -> str:
    # Read once per class: callers ask per session or, in training/evaluate.py, per token.
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


class DynamicSession:
    """transformers' DynamicCache, with the length bookkeeping the loop needs."""

    kind = "dynamic"

    def __init__(self, model, device):
        from transformers import DynamicCache

        self.model, self.device = model, device
        self.cache = DynamicCache(config=model.config)
        self.cache_keyword = cache_keyword(model)
        self.length = 0
        self.window = getattr(model.config, "sliding_window", None)

    def can_truncate_after(self, extra: int) -> bool:
        # A sliding-window layer keeps only its last window-1 tokens: once it has seen
        # more, what it dropped cannot come back, so rolling back is refused.
        return not self.window or self.length + extra < self.window

    def forward(self, ids: list[int], keep: int):
        import torch

        input_ids = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=keep, **{self.cache_keyword: self.cache})
        self.length += len(ids)
        return out.logits[0]

    def truncate(self, length: int) -> None:
        if length < self.length:
            self.cache.crop(-(self.length - length))
            self.length = length
