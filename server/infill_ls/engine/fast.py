"""Fast decoding on CUDA: StarCoder2's forward pass over a static KV cache, compiled.

gpt-fast's recipe in a few lines: every tensor has a fixed shape (the KV cache is
allocated once for ``max_tokens`` positions and written at the positions being
decoded), so ``torch.compile(fullgraph=True)`` fuses a decoder layer's kernels
(including the dequantization of weight-only quantized linears, quantize.py) and one
CUDA graph per step size replays the whole step with a single launch.  One layer is
compiled and serves them all (``layer_step``: its tensors and modules are arguments, and
it ends with the next layer's norm, so that the residual sum still fuses with the norm it
feeds).  Compiled whole, the step had every layer traced and lowered again: the 15B shape
took 66-166 s on an H200; 40 layers of a small StarCoder2 with inductor on a CPU and an
empty cache took 117-132 s whole against 18-21 per layer (bench/compile_time.py).
``compile(whole_model=True)`` still compiles it whole, for bench/gpu.py's ``+whole``
variants and as the fallback where one layer cannot serve all.  The weights are the
transformers model's own tensors (each layer's query, key and value projections run as one
linear, and the three hold views of its tensors: ``joined_linear``); only the loop around
them is rewritten.

Compiling takes a while on a large model, so ``compile_in_background`` does it on a
thread after loading; the engine keeps using the eager path until ``ready`` is set.
The same code runs uncompiled on the CPU, which is how the tests check it.

The CUDA graphs are captured here (``CapturedStep``), not by ``mode="reduce-overhead"``:
its CUDA-graph trees keep their state per thread, and the server compiles on one thread
and decodes on another (pytorch/pytorch#123177; on an H200 the test that decodes after a
background compile died with a segmentation fault).  A captured graph replays from any
thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

from . import attention as split_attention
from . import quantize

log = logging.getLogger(__name__)


def supports(model) -> bool:
    """Whether this module knows the model's layout (StarCoder2 and its look-alikes)."""
    inner = getattr(model, "model", None)
    layer = getattr(inner, "layers", [None])[0]
    attention = getattr(layer, "self_attn", None)
    return all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")) and hasattr(
        getattr(layer, "mlp", None), "c_fc"
    )


def row_layout(module: nn.Module) -> tuple | None:
    """``module``'s tensors by name, and which are None, if each has one row per output feature."""
    tensors = {**module._parameters, **module._buffers}
    if any(t is not None and t.shape[0] != module.out_features for t in tensors.values()):
        return None
    return tuple((name, t is None) for name, t in tensors.items())


def joined_linear(linears: list[nn.Module]) -> nn.Module | None:
    """One linear computing ``linears`` side by side (their outputs concatenated), or None
    where they cannot be joined: different kinds or inputs, or a layout whose rows are not
    output features (tinygemm's tiles, bitsandbytes).

    Each tensor of the kinds joined here (``nn.Linear`` and quantize.py's) has a row per
    output feature, so joining is concatenating rows, and the parts keep views of the joined
    tensors: no memory is added, and transformers' own forward (the eager path) still runs
    them.  Why: a narrow linear costs a decode step far more than its share of the weights.  On an
    H200 the 15B shape's key and value projections (512 rows) took 17-19 µs each in int8
    and int4 against 30 for the query's 6,144 (bench/results/gpu-linear-20261126-151314.json):
    ~1.4 ms per token over 40 layers for 1/14 of the attention's weights."""
    first = linears[0]
    kind = type(first)
    layouts = {row_layout(m) for m in linears}
    if (kind not in (nn.Linear, *quantize.QUANTIZED_LINEARS.values()) or any(type(m) is not kind for m in linears)
            or len(layouts) > 1 or None in layouts or len({m.in_features for m in linears}) > 1):
        return None
    joined = kind.__new__(kind)
    nn.Module.__init__(joined)
    for key, value in vars(first).items():  # in_features, group_size, ...: the same for all
        if not key.startswith("_"):
            setattr(joined, key, value)
    sizes = [m.out_features for m in linears]
    joined.out_features = sum(sizes)
    if hasattr(joined, "plan"):
        joined.plan = None  # a kernel's launch is chosen per shape (quantize.use_kernels)
    for name, _ in layouts.pop():
        parameter = name in first._parameters
        register = joined.register_parameter if parameter else joined.register_buffer
        if getattr(first, name) is None:
            register(name, None)
            continue
        whole = torch.cat([getattr(m, name).detach() for m in linears])
        register(name, nn.Parameter(whole, requires_grad=False) if parameter else whole)
        for module, part in zip(linears, whole.split(sizes)):
            if parameter:
                module._parameters[name] = nn.Parameter(part, requires_grad=False)
            else:
                module._buffers[name] = part
    return joined


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def grouped_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """One query token ([1, heads, 1, dim]) attending to every key ([1, key heads, slots, dim])
    where ``mask`` ([1, slots], if given) is true, the query heads of each key head taken as
    rows of one matmul.  On a CPU this beat SDPA's
    flash kernel from 4 query heads per key head up (1 thread, float32, per layer:
    StarCoder2-3B's 24/2 heads at 1,025 keys 0.30 against 0.87 ms, at 4,000 keys 1.2 against
    5.7; 16/4 heads 0.35 against 0.69), and lost at 2 with few keys (4/2 heads, 300 keys: 58
    against 41 µs), 2026-11-27.  Through the engine, 4 layers of the 3B shape in int8dyn on 2
    threads decoded at 40.6 against 41.9 ms/token after 1,024 prompt tokens, 43.0 against 45.3
    after 3,000 (bench/cpu.py --static-variants sdpa, cpu-20261127-065331.json, -065458.json)."""
    batch, heads, _, dim = q.shape
    rows = q.view(batch, keys.shape[1], heads // keys.shape[1], dim)  # [1, key heads, group, dim]
    scores = torch.matmul(rows, keys.transpose(-1, -2)).mul_(scale)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights, values).view(batch, heads, 1, dim)


class StaticDecoder:
    def __init__(self, model, max_tokens: int, step_sizes: tuple[int, ...] = (1,), join_qkv: bool = True):
        config = model.config
        inner = model.model
        self.model, self.inner = model, inner
        window = getattr(config, "sliding_window", None)
        # Within one window, sliding-window attention is plain causal attention; longer
        # prompts stay on the eager path.
        self.max_tokens = min(max_tokens, window) if window else max_tokens
        self.step_sizes = tuple(sorted(step_sizes))  # smallest first: a step takes the first that fits
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.groups = config.num_attention_heads // config.num_key_value_heads  # query heads per key head
        embed = inner.embed_tokens.weight
        self.device, dtype = embed.device, embed.dtype
        shape = (1, config.num_key_value_heads, self.max_tokens, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in inner.layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in inner.layers]
        positions = torch.arange(self.max_tokens, device=self.device)
        cos, sin = inner.rotary_emb(torch.zeros(1, dtype=dtype, device=self.device), positions[None])
        self.cos, self.sin = cos[0].to(dtype), sin[0].to(dtype)
        self.slots = positions
        # One-token steps attend as two matmuls (grouped_attention), which read the keys and
        # values once: on a CPU with 4 or more query heads per key head (faster there,
        # measured); on a GPU where SDPA would take its math backend for the compiled step,
        # which copies them once per query head of a group (PyTorch's sources put that step on
        # cuDNN on an H200 with torch 2.11; bench/gpu.py records the choice).  The bench
        # turns it off to compare.
        if self.device.type == "cpu":
            self.grouped_matmul = self.groups >= 4
        else:
            self.grouped_matmul = self.groups > 1 and self.step_attention_backend() == "MATH"
        self.qkv_sizes = [config.num_attention_heads * self.head_dim] + 2 * [config.num_key_value_heads * self.head_dim]
        # join_qkv=False: the bench's comparison (bench/gpu_linear.py times the linears both ways).
        self.qkv = self.join_projections(dtype) if join_qkv else [None] * len(inner.layers)
        # Fixed addresses: CUDA graphs may then write the cache in place.  Without this the
        # cache tensors are ordinary graph inputs, and inductor skipped CUDA graphs on the
        # H100 ("skipping cudagraphs due to mutated inputs (80 instances)", bench/gpu.py,
        # 2026-11-25), leaving one kernel launch per op: 17.6 ms/token.  With it, no skips
        # and 10.4-12.3 ms/token on an H200 (2026-11-26; an H100 not measured since).
        # (Measured with reduce-overhead's graphs; CapturedStep's graphs need no mark, and
        # it is kept: inductor then reads the cache as a fixed buffer, not an input.)  Not
        # guarded (torch's default before 2.9 was to guard): a guard on each layer's cache
        # address would compile the layer step again for every layer.
        for tensor in (*self.keys, *self.values, self.cos, self.sin, self.slots):
            torch._dynamo.mark_static_address(tensor, guard=False)
        # Step sizes whose compiled step attends on attention.py's kernel (choose_step_attention).
        self.split_attention_steps: set[int] = set()
        self.slots_per_split: dict[int, int] = {}  # per step size, as timed fastest
        self.step_attention: dict[int, dict] = {}  # what choose_step_attention measured
        self.fallbacks: list[str] = []  # what compile gave up, and why (see compile)
        self.ready = threading.Event()  # set once the compiled steps are usable
        self.settled = threading.Event()  # set once a background compile has ended, either way
        self.compiled = None  # the torch.compile'd forward
        self.runs: dict = {}  # step size -> its CapturedStep (CUDA) or the compiled forward
        self.compile_seconds: float | None = None
        self.compiled_whole = False  # whether the steps compiled as one graph (asked for, or the fallback)

    def step_attention_backend(self) -> str:
        """The backend SDPA picks for the compiled one-token step's attention: a query of
        every head, the grouped keys and values of every slot, a boolean mask over them
        (``unknown`` where PyTorch's private query for it fails)."""
        from torch.nn.attention import SDPBackend

        keys = self.keys[0]
        query = torch.zeros(1, self.groups * keys.shape[1], 1, keys.shape[-1], dtype=keys.dtype, device=keys.device)
        mask = torch.ones(1, keys.shape[2], dtype=torch.bool, device=keys.device)
        try:
            return SDPBackend(torch._fused_sdp_choice(query, keys, keys, mask, 0.0, False, enable_gqa=True)).name
        except Exception as error:  # noqa: BLE001 - a private API: the decoder must not depend on it
            log.warning("which SDPA backend the decode step takes is unknown: %s", error)
            return "unknown"

    def join_projections(self, dtype: torch.dtype) -> list[nn.Module | None]:
        """Each layer's query, key and value projections as one linear (``joined_linear``), on
        the kernels the three use; or None for every layer (all are joined or none)."""
        apart = [None] * len(self.inner.layers)
        joined = []
        for layer in self.inner.layers:
            attention = layer.self_attn
            parts = [attention.q_proj, attention.k_proj, attention.v_proj]
            if [part.out_features for part in parts] != self.qkv_sizes:
                return apart
            joined.append(joined_linear(parts))
            if joined[-1] is None:
                return apart
        named = nn.ModuleDict({f"layers_{i}_qkv_proj": linear for i, linear in enumerate(joined)})  # for the log
        if quantize.on_triton_kernels(self.model):
            # The three run on gemv.py's kernels: so must the joined one, or it would decode
            # slower than they do (compiled, the plain modules lost even to eager).
            counts = quantize.use_kernels(named, dtype)
            if counts["plain"]:
                log.warning("joined query/key/value projections: no kernel (%s); kept apart", counts)
                return apart
        elif isinstance(joined[0], quantize.Fp8Linear) and joined[0].weight.is_cuda:
            quantize.tune_fp8(named, dtype)  # the joined shape's own choice of kernel
        return joined

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, keep: int | None = None,
                end: int | None = None, layer_step=None) -> torch.Tensor:
        """Logits for ``ids`` [1, n] at cache ``positions`` [n], filling the cache: one row per
        token, or for the last ``keep`` tokens only (a prompt needs the last row; the output
        projection of every row cost ~40 ms of a 1,024-token prefill of the bundled model on a CPU).

        ``end``: the slots after it are unused (uncompiled steps pass it, where shapes may
        vary): attention reads only the first ``end`` slots.  A compiled step attends over
        every slot with the mask, its shapes fixed.  ``end`` equal to the number of tokens is
        a prompt into an empty cache (positions 0..n-1): plain causal attention, which SDPA
        runs on its fused (flash) kernels; a mask rules those out (a 2,048-token prefill of
        the 15B shape took 148 ms that way on an H200, 106 on the eager path).
        """
        n = ids.shape[1]
        from_start = end == n
        x = self.inner.embed_tokens(ids)
        cos, sin = self.cos[positions], self.sin[positions]
        # A query sees every slot up to its own position; later slots hold stale tokens.
        slots = self.slots if end is None else self.slots[:end]
        # One token at the end of the slots read sees them all: no mask.  (A lower-right
        # mask there cost the CPU's one-token steps a copy of every layer's keys and values
        # for its key heads, ~20 % of the bundled model's step, 2026-11-27.)
        last_only = end is not None and n == 1
        # n tokens after end - n cached ones: that mask is causal, aligned to the last slot.
        lower_right = end is not None and not from_start and not last_only and self.lower_right_chunks
        if from_start or last_only or (end is None and n in self.split_attention_steps):
            mask = None
        elif lower_right:
            mask = causal_lower_right(n, end)
        else:
            mask = positions[:, None] >= slots[None, :]
        expand = self.groups if lower_right else 1
        layer_step = layer_step or self.layer_step
        layers = self.inner.layers
        h = layers[0].input_layernorm(x)
        for i, layer in enumerate(layers):
            next_norm = layers[i + 1].input_layernorm if i + 1 < len(layers) else self.inner.norm
            x, h = layer_step(layer, next_norm, self.qkv[i], self.keys[i], self.values[i], x, h, cos, sin, positions,
                              mask, end, expand, from_start)
        if keep is not None:
            h = h[:, -keep:]
        return self.model.lm_head(h)[0]

    def layer_step(self, layer: nn.Module, next_norm: nn.Module, qkv: nn.Module | None, keys: torch.Tensor,
                   values: torch.Tensor, x: torch.Tensor, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   positions: torch.Tensor, mask, end: int | None, expand: int,
                   from_start: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder layer of ``forward``: the residual stream ``x`` and its normed ``h`` in,
        the layer's residual stream out and it normed by ``next_norm`` (the next layer's input
        norm; the model's final norm after the last layer), writing the layer's keys and
        values into ``keys`` and ``values``.  Everything a layer owns comes in as an argument,
        so that one compile of this function serves all the layers (``compile``); the next
        layer's norm is taken here so that it fuses with the residual sum that feeds it, as it
        did when the step was compiled whole."""
        n, attention = x.shape[1], layer.self_attn
        if qkv is None:
            q, k, v = attention.q_proj(h), attention.k_proj(h), attention.v_proj(h)
        else:
            q, k, v = qkv(h).split(self.qkv_sizes, dim=-1)
        q = q.view(1, n, -1, self.head_dim).transpose(1, 2)
        k = k.view(1, n, -1, self.head_dim).transpose(1, 2)
        v = v.view(1, n, -1, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        keys.index_copy_(2, positions, k)
        values.index_copy_(2, positions, v)
        out = self.attend(q, keys, values, positions, mask, attention.scaling, end, expand, from_start)
        x = x + attention.o_proj(out.transpose(1, 2).reshape(1, n, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
        return x, next_norm(x)

    def attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor, mask,
               scale: float, end: int | None, expand: int, from_start: bool) -> torch.Tensor:
        """The step's queries ``q`` [1, heads, n, dim] at ``positions`` over a layer's cache, as
        ``forward`` prepared it (``mask``, ``end``, ``expand``, ``from_start``)."""
        n = q.shape[2]
        if end is None and n in self.split_attention_steps:
            return split_attention.decode_attention(q, keys, values, positions, scale,
                                                    self.slots_per_split.get(n, split_attention.SLOTS_PER_SPLIT))
        if end is not None:
            keys, values = keys[:, :, :end], values[:, :, :end]
        if expand > 1:  # flash attention's lower-right kernel takes as many key heads as query heads
            keys, values = keys.repeat_interleave(expand, 1), values.repeat_interleave(expand, 1)
        if n == 1 and self.grouped_matmul:
            return grouped_attention(q, keys, values, scale, mask)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=from_start, scale=scale,
                                              enable_gqa=expand == 1)

    def choose_step_attention(self, exclusive=contextlib.nullcontext()) -> dict[int, dict]:
        """On a GPU, for each compiled step size: attend with attention.py's kernel (only the
        slots in use, split among programs; each of ``attention.SPLITS`` slots per program
        timed, the fastest kept) where it computes what SDPA does and is faster, both timed as
        a compiled step attends, in a CUDA graph, every slot in use (the kernel's slowest
        case).  Returns the timings per size, for the log and the bench.  ``exclusive`` (the
        engine's lock) is held for each timing (~0.3 s), whose CUDA graph capture another
        thread's work on the GPU would break, not for the whole choice (seconds)."""
        chosen: dict[int, dict] = {}
        if self.device.type != "cuda" or not split_attention.available() or self.keys[0].dtype == torch.float32:
            return chosen  # (float32: tl.dot would round to TF32)
        generator = torch.Generator(self.device).manual_seed(0)
        keys, values = (torch.randn(self.keys[0].shape, dtype=self.keys[0].dtype, device=self.device,
                                    generator=generator) for _ in range(2))
        scale = self.inner.layers[0].self_attn.scaling
        for size in self.step_sizes:
            q = torch.randn(1, self.groups * keys.shape[1], size, keys.shape[-1], dtype=keys.dtype, device=self.device,
                            generator=generator)
            positions = torch.arange(self.max_tokens - size, self.max_tokens, device=self.device)
            mask = positions[:, None] >= self.slots[None, :]

            def attend() -> torch.Tensor:
                return self.attend(q, keys, values, positions, mask, scale, None, 1, False)

            def timed() -> float:
                with exclusive:
                    return quantize.graph_ms(attend, self.device)

            self.split_attention_steps.discard(size)
            try:
                expected, sdpa_ms = attend().float(), timed()
                self.split_attention_steps.add(size)
                kernel_ms, errors = {}, {}
                for split in split_attention.SPLITS:
                    self.slots_per_split[size] = split
                    errors[split], kernel_ms[split] = quantize.relative_error(attend(), expected), timed()
            except Exception as failure:  # noqa: BLE001 - no kernel here: SDPA serves
                self.split_attention_steps.discard(size)
                log.info("step of %d tokens: SDPA (the split-slot kernel failed: %s)", size,
                         quantize.why_failed(failure))
                continue
            agreeing = [split for split in kernel_ms if errors[split] <= quantize.KERNEL_TOLERANCE]
            best = min(agreeing or kernel_ms, key=kernel_ms.get)
            self.slots_per_split[size] = best
            if not agreeing or kernel_ms[best] >= sdpa_ms:
                self.split_attention_steps.discard(size)
            chosen[size] = {"sdpa_ms": round(sdpa_ms, 4),
                            "kernel_ms": {split: round(ms, 4) for split, ms in kernel_ms.items()},
                            "relative_error": errors[best], "slots_per_split": best,
                            "kernel": size in self.split_attention_steps}
            log.info("step of %d tokens attends on %s (%s)", size,
                     "the split-slot kernel" if size in self.split_attention_steps else "SDPA", chosen[size])
        return chosen

    # Tokens appended to a reused prompt (after a keystroke before the suffix, the suffix is
    # prefilled again) run uncompiled, at a new length almost every time.  With a boolean
    # mask SDPA ran cuDNN's kernel on an H200, which builds an execution graph per new shape;
    # the GPU typing replay, whose shapes change with every request, prefilled ~700 such
    # tokens in a median 115 ms against 43 ms for one chunk repeated at one shape
    # (bench/gpu_prefill.py).  Lower-right causal attention is that mask as flash attention
    # takes it, prepared for no shape; at one shape both ways took 43-44 ms, and in the
    # replay such chunks now take a median 35 ms (H200, 2026-11-27).  The bench turns it off
    # to compare.
    lower_right_chunks = True

    def step(self, ids: list[int], start: int, keep: int | None = None) -> torch.Tensor:
        """Logits for ``ids`` written at positions ``start``... (at least the last ``keep`` rows).

        Compiled when ready and ``ids`` fit one of ``step_sizes``: a shorter step (a draft
        of fewer tokens, a few tokens typed into a reused prompt) is padded to that size
        instead of falling back to the uncompiled forward, which on a 15B model costs
        about two compiled steps (~20 against 10-12 ms on an H200).  The padding's rows are dropped, and what it
        writes to the cache lies past the session's length: masked for every earlier
        position, and overwritten by the step that reaches it.
        """
        n = len(ids)
        size = next((size for size in self.step_sizes if size >= n), None)
        run = self.runs.get(size)
        if run is not None and start + size <= self.max_tokens:
            tokens = torch.tensor([ids + [ids[-1]] * (size - n)], device=self.device)
            positions = torch.arange(start, start + size, device=self.device)
            return run(tokens, positions)[:n].clone()  # a CUDA graph's output is overwritten by its next replay
        tokens = torch.tensor([ids], device=self.device)
        return self.forward(tokens, torch.arange(start, start + n, device=self.device), keep=keep, end=start + n)

    def compile(self, mode: str | None = None, warmup_runs: int = 3, backend: str = "inductor",
                tune: bool = False, exclusive=contextlib.nullcontext(), whole_model: bool = False,
                attention: str = "fastest") -> None:
        """Compile the decode step for each of ``step_sizes``, warm it up and, on CUDA, capture
        it in a CUDA graph; then set ``ready``.

        The warm-up writes into the cache, so callers must treat its contents as lost.
        ``backend="eager"`` only captures the graph (fullgraph: any graph break raises),
        which is how the CPU tests check that the step compiles without a GPU.  ``tune``
        turns on inductor's coordinate-descent tuning of the kernels it generates (as
        gpt-fast does): slower to compile; the one-row int8 linears it made were 3.4x
        faster on an H200 (bench/gpu_linear.py), the whole model is not measured yet.

        ``exclusive`` (the engine's lock) is held after each size's first call (the compile,
        minutes, beside the eager path's requests) for the warm-up and the capture (about a
        second): a capture fails when another thread works on the GPU meanwhile (on an H200
        a suggestion served on the eager path did that, and the engine stayed eager).

        ``attention``: how the compiled steps attend — "fastest" times attention.py's kernel
        against SDPA per step size on a GPU (``choose_step_attention``), "kernel" and "sdpa"
        take one.  ``whole_model``: compile the step as one graph, not one layer for all.
        """
        started = time.perf_counter()
        if attention == "fastest":
            self.step_attention = self.choose_step_attention(exclusive)
        else:  # "kernel" or "sdpa": what the tests and the bench compare
            self.split_attention_steps = set(self.step_sizes) if attention == "kernel" else set()
        # What is new to torch.compile on a GPU falls back to what ran there before, rather
        # than leave the engine uncompiled: the split-slot attention kernel (where the load
        # chose it) to SDPA, then one layer compiled for all to the step compiled whole.
        while True:
            try:
                self.compiled, self.runs = self.compile_steps(mode, warmup_runs, backend, tune, exclusive,
                                                              whole_model)
                break
            except Exception as error:
                if attention == "fastest" and self.split_attention_steps:
                    self.split_attention_steps = set()
                    given_up = "the split-slot attention kernel"
                elif not whole_model and attention != "kernel":
                    whole_model = True
                    given_up = "one layer compiled for all"
                else:
                    raise
                why = quantize.why_failed(error)
                self.fallbacks.append(f"{given_up}: {why}")
                log.warning("compiling the decode steps with %s failed (%s); trying without", given_up, why)
        self.compiled_whole = whole_model
        self.compile_seconds = time.perf_counter() - started
        log.info("fast decoding compiled in %.1f s", self.compile_seconds)
        self.ready.set()

    def compile_steps(self, mode, warmup_runs: int, backend, tune: bool, exclusive, whole_model: bool) -> tuple:
        """``compile``'s work: the compiled forward, and each step size's run (a CapturedStep on CUDA)."""
        # One compiled decoder per process: an earlier one's compiled code goes (every
        # decoder compiles the same layer_step, and the entries of earlier ones counted
        # against Dynamo's recompile limit: a test run's later decoders failed), and so
        # do the caches mark_static_address kept alive for it.  Its CUDA graphs still replay.
        torch.compiler.reset()
        # dynamic=False: each step size gets kernels specialised to it (a second size would
        # otherwise be compiled with a symbolic length).
        if whole_model:
            compiled = torch.compile(self.forward, mode=mode, fullgraph=True, backend=backend, dynamic=False)
        else:
            layer_step = torch.compile(self.layer_step, mode=mode, fullgraph=True, backend=backend, dynamic=False)
            compiled = functools.partial(self.forward, layer_step=layer_step)
        capture = self.device.type == "cuda"
        runs = {}
        # Inductor reads its settings when it compiles, i.e. at the first calls below.
        with torch._inductor.config.patch(coordinate_descent_tuning=tune), torch.inference_mode():
            for size in self.step_sizes:
                tokens = torch.zeros((1, size), dtype=torch.long, device=self.device)
                positions = torch.arange(size, device=self.device)
                compiled(tokens, positions)
                with exclusive:
                    runs[size] = (CapturedStep.capture(compiled, tokens, positions, warmup_runs - 1)
                                  if capture else compiled)
        return compiled, runs

    def compile_in_background(self, on_done=lambda ok: None, exclusive=contextlib.nullcontext()) -> threading.Thread:
        def run() -> None:
            try:
                self.compile(exclusive=exclusive)
                on_done(True)
            except Exception:  # the eager path keeps serving; say why in the log
                log.exception("compiling fast decoding failed; staying on the eager path")
                on_done(False)
            finally:
                self.settled.set()

        thread = threading.Thread(target=run, name="infill-compile", daemon=True)
        thread.start()
        return thread


class CapturedStep:
    """One compiled step size as a CUDA graph: fixed input and output tensors, one replay."""

    def __init__(self, graph, tokens: torch.Tensor, positions: torch.Tensor, logits: torch.Tensor):
        self.graph, self.tokens, self.positions, self.logits = graph, tokens, positions, logits

    @classmethod
    def capture(cls, run, tokens: torch.Tensor, positions: torch.Tensor, warmup_runs: int) -> "CapturedStep":
        # Warm up on a side stream (lazy initialisations must not land in the graph), as
        # torch.cuda.graph's documentation asks.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup_runs)):
                run(tokens, positions)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = run(tokens, positions)
        torch.cuda.synchronize()
        return cls(graph, tokens, positions, logits)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.graph.replay()
        return self.logits


class StaticSession:
    """The engine's view of the static cache: forward new tokens, roll back by length."""

    kind = "static"

    def __init__(self, decoder: StaticDecoder):
        self.decoder = decoder
        self.length = 0

    def capacity_left(self) -> int:
        return self.decoder.max_tokens - self.length

    def can_truncate_after(self, extra: int) -> bool:
        return self.length + extra <= self.decoder.max_tokens

    def forward(self, ids: list[int], keep: int) -> torch.Tensor:
        rows = self.decoder.step(ids, self.length, keep)
        self.length += len(ids)
        return rows[-keep:]

    def truncate(self, length: int) -> None:
        # Slots past ``length`` are masked until they are written again.
        self.length = min(self.length, length)
