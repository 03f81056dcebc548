"""The generation engine: prompt-cache reuse, prompt lookup, the static-cache decoder,
quantized weights, the time box and unloading when idle.

Engine tests load the tiny model in this process (the same ``LocalEngine`` the server
runs) and compare with ``model.generate``; the time box and idle unloading are
checked through the real server over stdio.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, inline, open_document, server_status, start_client, stop_client, wait_until_loaded

import sys

sys.path.insert(0, str(REPO / "server"))

from infill_ls.completion import build_prompt  # noqa: E402
from infill_ls.engine.base import GenerationRequest  # noqa: E402
from infill_ls.engine.local import DraftBackoff, LocalEngine, lookup_draft, reusable_tokens  # noqa: E402
from infill_ls.engine.quantize import quantize_weights  # noqa: E402
from infill_ls.postprocess import CursorContext  # noqa: E402
from infill_ls.settings import Settings  # noqa: E402

import textwrap  # noqa: E402

# Real code, stable for a given Python version.
SOURCE = Path(textwrap.__file__).read_text()[:1800]


def typing_edits(text: str) -> list[tuple[str, str]]:
    """(prefix, suffix) pairs an editor would produce: typing on, a fix before the cursor, a jump, deleting."""
    cursor = text.index("\n", 1200) + 1  # the start of a line
    steps = []
    prefix, suffix = text[:cursor], text[cursor:]
    for char in "x = 1":  # typing at the cursor
        prefix += char
        steps.append((prefix, suffix))
    prefix = prefix.replace("import", "import  ", 1)  # an edit far before the cursor
    steps.append((prefix, suffix))
    steps.append((prefix[:-3], suffix))  # backspace three times
    steps.append((prefix[:-3], suffix[40:]))  # the text after the cursor changed
    steps.append((prefix[: len(prefix) // 2], prefix[len(prefix) // 2 :] + suffix))  # jump up
    return steps


def reference_ids(engine: LocalEngine, ids: list[int], max_new_tokens: int) -> list[int]:
    with torch.inference_mode():
        out = engine.model.generate(
            torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=sorted(engine.stop_ids), pad_token_id=0,
        )
    return [t for t in out[0, len(ids):].tolist() if t not in engine.stop_ids]


def load_engine(model_dir: Path, **settings) -> LocalEngine:
    """float32 (quantization none) unless asked otherwise: the tests compare with float32
    ``model.generate``; on transformers' dynamic cache unless asked (fastDecode: on a CPU the
    static cache, uncompiled), the path each test below was written for."""
    return LocalEngine.load(Settings(model=str(model_dir), **{"quantization": "none", "fastDecode": False, **settings}))


@pytest.fixture(scope="module")
def engine(tiny_model) -> LocalEngine:
    return load_engine(tiny_model)


@pytest.fixture(scope="module", params=["none", "int8dyn", "fp8"])
def exact_engine(request, tiny_model) -> LocalEngine:
    """Each precision whose greedy output must not depend on how the prompt was split into
    forward calls: float32, and the kinds that quantize activations, a scale per token:
    int8dyn (auto's pick for large models on CPUs without bf16 instructions, where PyTorch's
    quantize_dynamic failed this: one activation scale per call) and fp8."""
    if request.param == "none":
        return request.getfixturevalue("engine")  # the module's float32 engine, not a second one
    return load_engine(tiny_model, quantization=request.param)


@pytest.fixture(scope="module")
def small_window_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with a 64-token sliding window, so prompts run past it."""
    out = tmp_path_factory.mktemp("window") / "model"
    shutil.copytree(tiny_model, out)
    config = json.loads((out / "config.json").read_text())
    config["sliding_window"] = 64
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def head_models(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """The tiny model with an output projection tied to its embedding table (as the bundled
    model's) and with an untied copy of that table (as StarCoder2-15B's): the same weights."""
    from transformers import AutoModelForCausalLM

    paths = {}
    for tie in ("tied", "untied"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        table = model.get_input_embeddings().weight
        model.config.tie_word_embeddings = tie == "tied"
        model.lm_head.weight = table if tie == "tied" else torch.nn.Parameter(table.detach().clone())
        paths[tie] = tmp_path_factory.mktemp(tie) / "model"
        shutil.copytree(tiny_model, paths[tie])
        model.save_pretrained(paths[tie])
    return paths


def generate(engine: LocalEngine, ids: list[int], max_new_tokens: int = 24, **options):
    return engine.generate(GenerationRequest(prompt_ids=ids, max_new_tokens=max_new_tokens, **options))


def prompt_ids(engine: LocalEngine, prefix: str, suffix: str, context_tokens: int = 2048) -> list[int]:
    settings = Settings(contextTokens=context_tokens, maxNewTokens=24)
    return build_prompt(engine.tokenizer, engine.template, CursorContext(prefix, suffix), settings).ids


# ----- prompt-cache reuse -----


def test_reuse_keeps_the_output_of_fresh_runs_and_of_generate_across_typing_edits(exact_engine):
    engine = exact_engine
    engine.clear_prompt_cache()
    reused = []
    for prefix, suffix in typing_edits(SOURCE):
        ids = prompt_ids(engine, prefix, suffix)
        with_reuse = generate(engine, ids)
        reused.append(with_reuse.reused_tokens)
        engine.clear_prompt_cache()
        fresh = generate(engine, ids)
        assert fresh.reused_tokens == 0
        assert with_reuse.token_ids == fresh.token_ids == reference_ids(engine, ids, 24)[: len(fresh.token_ids)]
        assert with_reuse.stop_reason == fresh.stop_reason
    # Typing at the end reuses nearly all the prompt; an edit near the start little of it.
    assert reused[1] > 100 and reused[-1] < reused[1]


def test_reusable_tokens_backs_off_one_token_at_the_seam():
    assert reusable_tokens([1, 2, 3, 4], [1, 2, 3, 9]) == 2
    assert reusable_tokens([1, 2, 3], [1, 2, 3, 4, 5]) == 2
    assert reusable_tokens([5, 2], [1, 2]) == 0
    assert reusable_tokens([], [1]) == 0


def test_sliding_window_refuses_reuse_past_the_window_and_keeps_the_output(small_window_model):
    engine = load_engine(small_window_model)
    assert engine.model.config.sliding_window == 64
    short, long = SOURCE[:60], SOURCE[:400]
    runs = []
    for text in (short, short + "de", long, long + "de", short + "x"):
        ids = prompt_ids(engine, text, "", context_tokens=256)
        for lookup in (False, True):
            generation = generate(engine, ids, 16, prompt_lookup=lookup)
            assert generation.token_ids == reference_ids(engine, ids, 16)[: len(generation.token_ids)]
            runs.append((len(ids), generation.reused_tokens))
    short_ids, long_ids = runs[0][0], runs[4][0]
    assert short_ids + 16 < 64 < long_ids
    # Both short prompts fit the window: the second reuses the first's cache (and the
    # lookup run its own twin's); after a prompt longer than the window nothing is reused.
    assert runs[1][1] > 0 and runs[3][1] > 0
    assert runs[5][1] == 0 and runs[6][1] == 0 and runs[8][1] == 0


# ----- prompt lookup -----


def test_lookup_draft_copies_what_followed_the_latest_match():
    assert lookup_draft([1, 2, 3, 9, 1, 2, 3, 7, 8, 1, 2, 3], limit=2) == [7, 8]
    assert lookup_draft([4, 5, 6, 4], limit=5) == [5, 6, 4]
    assert lookup_draft([1, 2, 3], limit=3) == []


def test_drafts_that_keep_missing_are_tried_ever_more_rarely():
    backoff, tried = DraftBackoff(), []
    for step in range(40):
        if backoff.try_now():
            tried.append(step)
            backoff.record(drafted=8, accepted=0)
    assert tried == [0, 2, 6, 14, 30]
    # No draft found judges nothing; a draft accepted in part ends the backoff.
    backoff.record(drafted=0, accepted=0)
    while not backoff.try_now():
        pass
    backoff.record(drafted=8, accepted=3)
    assert all(backoff.try_now() for _ in range(5))


def test_prompt_lookup_gives_the_greedy_output_and_accepts_drafts(exact_engine):
    engine = exact_engine
    repetitive = "".join(f"    values.append(item_{i} * scale + offset)\n" for i in range(30))
    ids = prompt_ids(engine, "def fill(values, scale, offset):\n" + repetitive + "    values.append(", "")
    engine.clear_prompt_cache()
    plain = generate(engine, ids, 48)
    engine.clear_prompt_cache()
    speculative = generate(engine, ids, 48, prompt_lookup=True)
    assert speculative.token_ids == plain.token_ids == reference_ids(engine, ids, 48)[: len(plain.token_ids)]
    assert plain.draft_tokens == 0
    assert speculative.accepted_draft_tokens > 0
    # Rejected drafts are rolled back: the cache then serves the next request exactly.
    again = generate(engine, ids + [ids[-2]], 48, prompt_lookup=True)
    assert again.reused_tokens == len(ids) - 1
    assert again.token_ids == reference_ids(engine, ids + [ids[-2]], 48)[: len(again.token_ids)]


# ----- the static-cache decoder (fast decoding, uncompiled on the CPU) -----


def test_static_cache_decoder_matches_the_eager_path(tiny_model):
    eager = load_engine(tiny_model)
    fast = load_engine(tiny_model)
    fast.start_fast_decoding(max_tokens=1024, compile=False)
    for prefix, suffix in typing_edits(SOURCE)[:4]:
        ids = prompt_ids(eager, prefix, suffix, context_tokens=900)
        for lookup in (False, True):
            expected = generate(eager, ids, prompt_lookup=lookup)
            got = generate(fast, ids, prompt_lookup=lookup)
            assert got.path == "static" and expected.path == "dynamic"
            assert got.token_ids == expected.token_ids
    assert got.reused_tokens > 0
    # A prompt longer than the static cache falls back to the eager path.
    long_ids = prompt_ids(eager, SOURCE * 3, "", context_tokens=1500)
    assert generate(fast, long_ids).path == "dynamic"


def test_on_a_cpu_the_engine_decodes_on_the_static_cache_by_default(tiny_model):
    """What the server runs on a CPU (fastDecode's default): the static cache, uncompiled,
    giving the dynamic cache's tokens, with prompt lookup and prompt-cache reuse."""
    default = LocalEngine.load(Settings(model=str(tiny_model), quantization="none"))
    eager = load_engine(tiny_model)
    assert default.fast is not None and default.fast.compiled is None
    for prefix, suffix in typing_edits(SOURCE)[:3]:
        ids = prompt_ids(eager, prefix, suffix, context_tokens=900)
        got, want = generate(default, ids, prompt_lookup=True), generate(eager, ids, prompt_lookup=True)
        assert (got.path, want.path) == ("static", "dynamic") and got.token_ids == want.token_ids
    assert got.reused_tokens > 0
    assert LocalEngine.load(Settings(model=str(tiny_model), quantization="none", fastDecode=False)).fast is None
    # The cache is allocated whole: never longer than the model's positions (plus a draft
    # check), whatever contextTokens says (the bundled model: 2,048 positions, no window).
    wide = LocalEngine.load(Settings(quantization="none", contextTokens=100_000))
    assert getattr(wide.model.config, "sliding_window", None) is None
    assert wide.fast.max_tokens <= wide.model.config.max_position_embeddings + 9


@pytest.mark.parametrize("quantization", ["none", "fp8", "fp8-scales-after"])
def test_static_decode_step_compiles_without_a_graph_break(tiny_model, quantization):
    """torch.compile(fullgraph=True) captures each layer's step whole (no graph break) and the
    engine then generates what the eager path does, checked on the CPU; fp8 with both of its
    calls (quantize.tune_fp8 picks one per shape on a GPU)."""
    from infill_ls.engine.quantize import Fp8Linear

    kind = quantization.removesuffix("-scales-after")
    eager = load_engine(tiny_model, quantization=kind)
    fast = load_engine(tiny_model, quantization=kind)
    if quantization.endswith("-scales-after"):
        for engine in (eager, fast):
            for module in engine.model.modules():
                if isinstance(module, Fp8Linear):
                    module.unit_scale = torch.ones(())
    fast.start_fast_decoding(max_tokens=512, compile=False)
    fast.fast.ready.clear()
    fast.fast.compile(mode=None, backend="eager", warmup_runs=1)
    ids = prompt_ids(eager, SOURCE[:600], "", context_tokens=400)
    for lookup in (False, True):
        assert generate(fast, ids, prompt_lookup=lookup).token_ids == generate(eager, ids, prompt_lookup=lookup).token_ids


@pytest.mark.parametrize("quantization, whole_model",
                         [("none", False), ("none", True), ("int8wo", False), ("int4wo", False), ("fp8", False)])
def test_one_compile_of_a_layer_serves_every_layer(tiny_model, quantization, whole_model):
    """The decoder compiles one layer's step and runs it for every layer (compile time that
    grows far less with the model's depth: 40 layers of a small StarCoder2 compiled with
    inductor on a CPU in 18-21 s against 117-132 whole, bench/compile_time.py); ``whole_model`` compiles the step as
    one graph, as before.  Either way one graph per step size (no layer compiled again for
    its own tensors or modules), holding one layer's four linears (query/key/value joined,
    output, the MLP's two) or every layer's and the output head's, and the logits of the
    uncompiled decoder."""
    from infill_ls.engine import fast

    engine = load_engine(tiny_model, quantization=quantization)
    layers = len(engine.model.model.layers)
    graphs = []

    def counting(graph, inputs):
        graphs.append(graph)
        return graph.forward

    plain = fast.StaticDecoder(engine.model, 512)
    compiled = fast.StaticDecoder(engine.model, 512, step_sizes=(1, 9))
    compiled.compile(backend=counting, warmup_runs=1, whole_model=whole_model)
    assert len(graphs) == 2, [graph.code for graph in graphs]
    if quantization == "none":
        linears = [sum(node.target is F.linear for node in graph.graph.nodes) for graph in graphs]
        assert linears == ([layers * 4 + 1] * 2 if whole_model else [4, 4]), linears
    ids = prompt_ids(engine, SOURCE[:900], "", context_tokens=200)
    with torch.inference_mode():
        for start, end in [(0, 150), (150, 151), (151, 156), (156, 157)]:
            want, got = plain.step(ids[start:end], start), compiled.step(ids[start:end], start)
            assert torch.allclose(got, want, atol=1e-4), (start, end)


def test_steps_that_do_not_compile_with_the_attention_kernel_compile_on_sdpa(tiny_model, monkeypatch):
    """Where attention.py's kernel timed fastest at load but the step does not compile with
    it (new to torch.compile on a GPU; here a double that fails as a kernel that does not
    build would), the decoder compiles its steps on SDPA instead, says why, and decodes."""
    from infill_ls.engine import attention, fast

    engine = load_engine(tiny_model)
    plain, decoder = fast.StaticDecoder(engine.model, 512), fast.StaticDecoder(engine.model, 512, step_sizes=(1, 9))

    def kernel_won(exclusive) -> dict:
        decoder.split_attention_steps = {1, 9}
        return {1: {"kernel": True}, 9: {"kernel": True}}

    def does_not_build(*args, **kwargs):
        raise RuntimeError("split-slot attention: no such instruction here")

    monkeypatch.setattr(decoder, "choose_step_attention", kernel_won)
    monkeypatch.setattr(attention, "decode_attention", does_not_build)
    decoder.compile(backend="eager", warmup_runs=1)
    assert decoder.ready.is_set() and decoder.split_attention_steps == set()
    assert len(decoder.fallbacks) == 1 and "no such instruction here" in decoder.fallbacks[0]
    ids = prompt_ids(engine, SOURCE[:900], "", context_tokens=200)
    with torch.inference_mode():
        for start, end in [(0, 150), (150, 151), (151, 160)]:
            assert torch.allclose(decoder.step(ids[start:end], start), plain.step(ids[start:end], start), atol=1e-4)


def test_a_step_that_does_not_compile_one_layer_for_all_compiles_whole(tiny_model, monkeypatch):
    """Where one compiled layer cannot serve every layer (here each layer's cache carries a
    guard on its address, so each layer compiles again, past a recompile limit of 1: how a
    torch that guarded such tensors by default would fail), the decoder compiles the step
    whole, as before, says why, and decodes."""
    from infill_ls.engine import fast

    engine = load_engine(tiny_model)
    plain, decoder = fast.StaticDecoder(engine.model, 512), fast.StaticDecoder(engine.model, 512, step_sizes=(1,))
    for cache in (*decoder.keys, *decoder.values):
        torch._dynamo.mark_static_address(cache, guard=True)
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    decoder.compile(backend="eager", warmup_runs=1)
    assert decoder.ready.is_set() and len(decoder.fallbacks) == 1, decoder.fallbacks
    assert decoder.fallbacks[0].startswith("one layer compiled for all") and decoder.compiled_whole
    ids = prompt_ids(engine, SOURCE[:900], "", context_tokens=200)
    with torch.inference_mode():
        for start, end in [(0, 150), (150, 151), (151, 152)]:
            assert torch.allclose(decoder.step(ids[start:end], start), plain.step(ids[start:end], start), atol=1e-4)


def test_short_steps_padded_to_a_compiled_size_give_the_unpadded_logits(tiny_model):
    """A draft or a typed token shorter than a compiled step runs padded; the padding must
    stay invisible.  And a prefill into an empty cache, which skips the mask, must not differ."""
    from infill_ls.engine import fast

    engine = load_engine(tiny_model)
    ids = prompt_ids(engine, SOURCE[:900], "", context_tokens=400)
    plain = fast.StaticDecoder(engine.model, 512, step_sizes=(1, 9))  # never compiled: no padding
    padded = fast.StaticDecoder(engine.model, 512, step_sizes=(1, 9))
    padded.compile(mode=None, backend="eager", warmup_runs=1)
    # A prefill, a 3-token step padded to 9, a 1-token step inside the padding's slots,
    # a 5-token step padded to 9, then a rollback (a rejected draft) and a step over it.
    steps = [(0, 300), (300, 303), (303, 304), (304, 309), (306, 308)]
    with torch.inference_mode():
        for start, end in steps:
            want = plain.step(ids[start:end], start)
            got = padded.step(ids[start:end], start)
            assert got.shape == want.shape == (end - start, engine.model.config.vocab_size)
            assert torch.allclose(got, want, atol=1e-4), (start, end)
        # The prefill into an empty cache ran as causal attention over its own slots; the
        # masked attention over every slot gives the same logits.
        masked = plain.forward(torch.tensor([ids[:300]]), torch.arange(300))
        assert torch.allclose(masked, padded.step(ids[:300], 0), atol=1e-4)


def test_one_token_steps_with_many_query_heads_per_key_head_give_the_models_logits():
    """On a CPU, one-token steps of a model with 4+ query heads per key head (StarCoder2-3B
    has 12) attend as two matmuls instead of SDPA (and so does a GPU's compiled step where
    SDPA would take its math backend): a prompt, then tokens one at a time, must give the
    logits of the model's own forward over the whole sequence — uncompiled (attending to the
    slots written so far) and as the compiled step runs (every slot, under a mask; captured
    here without inductor)."""
    from transformers import Starcoder2Config, Starcoder2ForCausalLM

    from infill_ls.engine import fast

    torch.manual_seed(0)
    config = Starcoder2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512)
    model = Starcoder2ForCausalLM(config).eval()
    ids = torch.randint(0, 300, (1, 60)).tolist()[0]
    grouped, sdpa, compiled = (fast.StaticDecoder(model, 128) for _ in range(3))
    sdpa.grouped_matmul = False
    assert grouped.grouped_matmul and compiled.grouped_matmul
    compiled.compile(backend="eager")
    with torch.inference_mode():
        want = model(input_ids=torch.tensor([ids])).logits[0]
        for decoder in (grouped, sdpa, compiled):
            rows = [decoder.step(ids[:50], 0, keep=1)] + [decoder.step([t], 50 + i) for i, t in enumerate(ids[50:])]
            assert torch.allclose(torch.cat(rows), want[49:], atol=1e-4), (decoder.grouped_matmul, decoder.runs)


@pytest.mark.parametrize("kind", ["float32", "int8wo", "int4wo", "int8dyn", "fp8"])
def test_the_decoder_joins_query_key_and_value_without_adding_memory(tiny_model, engine, kind):
    """The static decoder runs each layer's three attention projections as one linear: it
    computes what the three compute, they keep views of its tensors (the footprint does not
    grow), and the eager path on the same model gives the logits it gave before."""
    from infill_ls.engine import fast
    from infill_ls.engine.quantize import weight_bytes

    model = quantized_model(tiny_model, kind)
    ids = prompt_ids(engine, SOURCE[:900], "", context_tokens=400)
    with torch.inference_mode():
        eager_before = model(input_ids=torch.tensor([ids])).logits
        footprint = weight_bytes(model)
        apart = fast.StaticDecoder(model, 512, join_qkv=False)
        joined = fast.StaticDecoder(model, 512)
        assert apart.qkv == [None, None] and None not in joined.qkv
        assert weight_bytes(model) == footprint
        for layer, qkv in zip(model.model.layers, joined.qkv):
            attention = layer.self_attn
            parts = (attention.q_proj, attention.k_proj, attention.v_proj)
            assert qkv.out_features == sum(part.out_features for part in parts)
            for name, tensor in qkv.named_buffers() if kind != "float32" else qkv.named_parameters():
                storage = tensor.untyped_storage().data_ptr()
                assert all(getattr(part, name).untyped_storage().data_ptr() == storage for part in parts), name
            h = torch.randn(1, 5, qkv.in_features)
            want = torch.cat([part(h) for part in parts], dim=-1)
            assert torch.allclose(qkv(h), want, rtol=1e-5, atol=1e-5)
        assert torch.equal(model(input_ids=torch.tensor([ids])).logits, eager_before)
        # A prompt and decode steps: the same logits as the projections apart.
        for start, end in ((0, 300), (300, 301), (301, 302)):
            assert torch.allclose(joined.step(ids[start:end], start), apart.step(ids[start:end], start),
                                  rtol=1e-4, atol=1e-4), (start, end)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled fast decoding needs CUDA (CPU checks it uncompiled)")
@pytest.mark.parametrize("quantization", ["none", "int8wo", "int4wo", "fp8"])  # weight-only on gemv.py's kernels; fp8 on _scaled_mm
def test_compiled_fast_decoding_on_cuda_matches_eager(tiny_model, quantization):
    eager = load_engine(tiny_model, device="cuda", quantization=quantization, fastDecode=False)
    fast = load_engine(tiny_model, device="cuda", quantization=quantization, fastDecode=True)
    assert fast.fast is not None and fast.fast.settled.wait(600)
    assert fast.fast.ready.is_set(), "the compile failed (see the log)"
    ids = prompt_ids(eager, SOURCE, "")
    compiled, reference = generate(fast, ids), generate(eager, ids)
    assert compiled.path == "static" and reference.path == "dynamic"
    # bf16 kernels fused differently may round differently: the random tiny model has
    # near-ties, so only the first tokens are required to agree.
    assert compiled.token_ids[:4] == reference.token_ids[:4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the split-slot attention kernel needs CUDA (CPU: test_gemv.py)")
def test_compiled_steps_attending_on_the_split_slot_kernel_give_the_uncompiled_logits_on_cuda(tiny_model):
    """A compiled decode step may attend on attention.py's kernel (where it times faster than
    SDPA): compiled and captured in a CUDA graph, one-token and draft-check steps give the
    logits the uncompiled decoder gives with SDPA, and the choice at load runs."""
    from infill_ls.engine import fast

    model = load_engine(tiny_model, device="cuda").model.to(torch.bfloat16)
    ids = prompt_ids(load_engine(tiny_model), SOURCE[:900], "", context_tokens=200)
    plain, compiled = fast.StaticDecoder(model, 512), fast.StaticDecoder(model, 512, step_sizes=(1, 9))
    assert set(compiled.choose_step_attention()) == {1, 9}  # timed both ways on this GPU
    compiled.compile(attention="kernel")
    assert compiled.split_attention_steps == {1, 9} and compiled.runs
    with torch.inference_mode():
        for start, end in [(0, 150), (150, 151), (151, 160), (160, 161)]:
            want, got = plain.step(ids[start:end], start), compiled.step(ids[start:end], start)
            assert (got.float() - want.float()).abs().max() < 0.05 * want.float().abs().max(), (start, end)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled fast decoding needs CUDA")
def test_requests_served_while_the_decoder_compiles_on_cuda(tiny_model):
    """The server keeps answering on the eager path while the compile (and its CUDA graph
    capture) runs on another thread; neither side may break the other."""
    import time

    engine = load_engine(tiny_model, device="cuda", quantization="none", fastDecode=True)  # compiles in the background
    ids = prompt_ids(engine, SOURCE, "")
    first = generate(engine, ids, prompt_lookup=True)
    served, deadline = 1, time.monotonic() + 300
    while not engine.fast.settled.is_set() and time.monotonic() < deadline:
        assert generate(engine, ids, prompt_lookup=True).token_ids[:4] == first.token_ids[:4]
        served += 1
    assert engine.fast.ready.is_set() and engine.fast.compiled is not None, "the compile failed (see the log)"
    after = generate(engine, ids, prompt_lookup=True)
    assert after.path == "static" and after.token_ids[:4] == first.token_ids[:4]
    assert served > 1, "nothing was served during the compile"


# ----- quantized weights -----

# Mean |logit difference| against float32 allowed, relative to the spread (std) of the
# float32 logits, and the share of positions whose argmax must agree.  The tiny random
# model has near-ties everywhere, so these are loose; measured (bench/quality.py):
# mean diff 0.005 std (bf16), 0.006 (int8wo), 0.027 (int8dyn), 0.09 (int4wo);
# agreement 98.5%, 98.9%, 94.6%, 83.8%; fp8 (2026-11-27, a random 400-token prompt): 0.034 and
# 91.8%.  A broken quantizer gives ~1 std and ~0%.
QUANTIZED_TOLERANCE = {"bf16": (0.02, 0.95), "int8wo": (0.02, 0.95), "int8dyn": (0.06, 0.88), "int4wo": (0.2, 0.7),
                       "fp8": (0.08, 0.82)}


def quantized_model(model_dir: Path, kind: str):
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if kind == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    return model if kind in ("bf16", "float32") else quantize_weights(model, kind)


@pytest.mark.parametrize("kind", sorted(QUANTIZED_TOLERANCE))
def test_quantized_logits_stay_close_to_float32(tiny_model, engine, kind):
    ids = torch.tensor([prompt_ids(engine, SOURCE[:1200], SOURCE[1200:1500])])
    with torch.inference_mode():
        reference = engine.model(input_ids=ids).logits.float()
        logits = quantized_model(tiny_model, kind)(input_ids=ids).logits.float()
    assert_close_to_float32(kind, logits, reference)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                    reason="fp8 matrix multiplication needs a GPU of compute capability 8.9+")
def test_fp8_on_cuda_stays_close_to_float32(tiny_model, engine):
    """On a GPU ``_scaled_mm`` is NVIDIA's kernel, not the CPU's reference the test above runs:
    the server's fp8 model (bf16 activations) must stay as close to float32."""
    gpu = load_engine(tiny_model, device="cuda", quantization="fp8")
    assert gpu.info.precision == "fp8"
    ids = torch.tensor([prompt_ids(engine, SOURCE[:1200], SOURCE[1200:1500])])
    with torch.inference_mode():
        # (the float32 engine is on the GPU too, where there is one)
        reference = engine.model(input_ids=ids.to(engine.model.device)).logits.float().cpu()
        logits = gpu.model(input_ids=ids.to("cuda")).logits.float().cpu()
    assert_close_to_float32("fp8", logits, reference)


def test_fp8_multiplies_a_steps_rows_alike_in_each_of_its_calls(tiny_model, engine):
    """On a GPU quantize.tune_fp8 picks per shape how a decode step's rows are multiplied:
    ``_scaled_mm`` applying the scales, or a call with scales of 1 followed by the scaling;
    either with the rows padded to 17.  All must give the same logits (here on the CPU's
    reference ``_scaled_mm``) for a prompt and a step, to rounding: they round the scaled
    products in another order, and an activation that lands on the other side of a float8
    step moves the layers after it a little."""
    from infill_ls.engine.quantize import FP8_PADDED_ROWS, Fp8Linear

    model = quantized_model(tiny_model, "fp8")
    ids = torch.tensor([prompt_ids(engine, SOURCE[:1200], SOURCE[1200:1500])])
    fp8_linears = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    assert fp8_linears and all(m.unit_scale is None and m.pad_rows == 0 for m in fp8_linears)
    with torch.inference_mode():
        inputs = (ids, ids[:, :1], ids[:, :9])  # a prompt, a step, a draft check
        reference = [model(input_ids=tokens).logits for tokens in inputs]
        for unit_scale, pad_rows in ((torch.ones(()), 0), (None, FP8_PADDED_ROWS), (torch.ones(()), FP8_PADDED_ROWS)):
            for module in fp8_linears:
                module.unit_scale, module.pad_rows = unit_scale, pad_rows
            for tokens, want in zip(inputs, reference):
                got = model(input_ids=tokens).logits
                assert got.shape == want.shape
                assert (got - want).abs().max() <= 0.01 * want.abs().max(), (unit_scale, pad_rows, tokens.shape)


def test_fp8_prompts_take_the_scales_inside_whatever_a_step_takes(tiny_model, engine, monkeypatch):
    """tune_fp8 times one row, so its choice applies to a step's few rows only: a prompt's
    rows go to ``_scaled_mm`` with their scales, unpadded (the scaling after the call would
    write and read float32 copies of a whole prompt's outputs)."""
    from infill_ls.engine.quantize import FP8_PADDED_ROWS, Fp8Linear

    model = quantized_model(tiny_model, "fp8")
    for module in model.modules():
        if isinstance(module, Fp8Linear):
            module.unit_scale, module.pad_rows = torch.ones(()), FP8_PADDED_ROWS
    calls, real = [], torch._scaled_mm
    monkeypatch.setattr(torch, "_scaled_mm", lambda rows, weight, scale_a, **kwargs: (
        calls.append((rows.shape[0], scale_a.numel())), real(rows, weight, scale_a=scale_a, **kwargs))[1])
    ids = torch.tensor([prompt_ids(engine, SOURCE[:1200], SOURCE[1200:1500])])
    with torch.inference_mode():
        model(input_ids=ids)
        prompt, calls[:] = list(calls), []
        model(input_ids=ids[:, :1])
    assert prompt and all(call == (ids.shape[1], ids.shape[1]) for call in prompt)  # scales inside, unpadded
    assert calls and all(call == (FP8_PADDED_ROWS, 1) for call in calls)  # padded, scales of 1


def test_fp8_keeps_the_fastest_call_per_shape_and_refuses_a_wrong_kernel(tiny_model, monkeypatch, tmp_path):
    """quantize.tune_fp8 as the server runs it on a GPU, on the CPU: the timings are a test
    double (they need CUDA graphs), the rest is real.  Each shape keeps the call its timing
    favours, every linear of that shape with it; a ``_scaled_mm`` that computes the wrong
    thing fails the load with a clear error instead of serving wrong suggestions."""
    from infill_ls.engine import quantize

    monkeypatch.setenv(quantize.CHOICES_FILE_VARIABLE, str(tmp_path / "choices.json"))  # none remembered
    model = quantized_model(tiny_model, "fp8")
    shapes = {(m.in_features, m.out_features) for m in model.modules() if isinstance(m, quantize.Fp8Linear)}
    assert (64, 128) in shapes and len(shapes) > 1
    # tune_fp8 tries per shape: scales inside, after, inside with the rows padded, after padded.
    # The double favours "after" for the tiny model's c_fc shape (64 -> 128), "inside, padded"
    # for the others.
    timed = []

    def fake_graph_ms(call, device, rep=20):
        out_features = call().shape[-1]
        choice = len(timed) % 4
        timed.append(out_features)
        return 1.0 if choice == (1 if out_features == 128 else 2) else 2.0

    monkeypatch.setattr(quantize, "graph_ms", fake_graph_ms)
    counts = quantize.tune_fp8(model, torch.float32)
    assert len(timed) == 4 * len(shapes)
    for module in model.modules():
        if isinstance(module, quantize.Fp8Linear):
            c_fc = module.out_features == 128
            assert (module.unit_scale is not None, module.pad_rows) == ((True, 0) if c_fc else (False, 17))
    assert counts == {"scales after": 2, "scales inside, rows padded to 17": 10}  # 2 layers x (c_fc; q, k, v, o, c_proj)

    real = torch._scaled_mm
    monkeypatch.setattr(torch, "_scaled_mm", lambda *args, **kwargs: real(*args, **kwargs) * 2)
    with pytest.raises(RuntimeError, match="_scaled_mm is off"):
        quantize.tune_fp8(quantized_model(tiny_model, "fp8"), torch.float32)


def test_a_load_reuses_the_remembered_fastest_call_once_it_checks_it(tiny_model, monkeypatch, tmp_path):
    """The choice each shape's timing made is kept on disk: the next load on the same GPU and
    software takes it without timing, after checking it still computes the right thing; one
    that no longer does is timed again, and an unreadable file is as good as none (timings
    are a test double, as above)."""
    from infill_ls.engine import quantize

    monkeypatch.setenv(quantize.CHOICES_FILE_VARIABLE, str(tmp_path / "choices.json"))
    timed = []

    def fake_graph_ms(call, device, rep=20):  # the scales after the call are fastest, padded or not
        choice = len(timed) % 4
        timed.append(choice)
        return 1.0 if choice == 1 else 2.0

    def choices(model):
        return {(m.out_features, m.unit_scale is not None, m.pad_rows) for m in model.modules()
                if isinstance(m, quantize.Fp8Linear)}

    monkeypatch.setattr(quantize, "graph_ms", fake_graph_ms)
    first = quantized_model(tiny_model, "fp8")
    quantize.tune_fp8(first, torch.float32)
    shapes = len(json.loads(quantize.choices_path().read_text()))
    assert shapes > 1 and len(timed) == 4 * shapes

    def no_timing(call, device, rep=20):
        raise AssertionError("a remembered choice was timed again")

    monkeypatch.setattr(quantize, "graph_ms", no_timing)
    second = quantized_model(tiny_model, "fp8")
    quantize.tune_fp8(second, torch.float32)
    assert choices(second) == choices(first) and all(after for _, after, _ in choices(second))

    # The scales applied after the call now come out wrong: the remembered choice fails its
    # check, and the timing (the double again) keeps a call that is right.
    monkeypatch.setattr(quantize, "graph_ms", fake_graph_ms)
    real = quantize.Fp8Linear.matmul
    monkeypatch.setattr(quantize.Fp8Linear, "matmul", lambda self, rows, scales, dtype, unit:
                        real(self, rows, scales, dtype, unit) * (2 if unit is not None else 1))
    timed.clear()
    third = quantized_model(tiny_model, "fp8")
    quantize.tune_fp8(third, torch.float32)
    assert len(timed) == 2 * shapes and not any(after for _, after, _ in choices(third))  # only right calls are timed

    monkeypatch.setattr(quantize.Fp8Linear, "matmul", real)
    quantize.choices_path().write_text("{ not json")
    timed.clear()
    quantize.tune_fp8(quantized_model(tiny_model, "fp8"), torch.float32)
    assert len(timed) == 4 * shapes
    assert len(json.loads(quantize.choices_path().read_text())) == shapes  # written anew


def test_many_choices_are_timed_briefly_and_the_fastest_few_again_in_full(monkeypatch, tmp_path):
    """tune_launch offers ~100 launches per shape: each is timed briefly, the
    quantize.FINALISTS fastest again in full, and the fastest in full is kept, among the
    choices that compute the right output only (timings are a test double: they need CUDA
    graphs; which launch computes what is real)."""
    from torch import nn

    from infill_ls.engine import quantize

    monkeypatch.setenv(quantize.CHOICES_FILE_VARIABLE, str(tmp_path / "choices.json"))
    torch.manual_seed(0)
    module = nn.Linear(8, 4)
    x = torch.randn(1, 8)
    expected = module(x).float()
    real_forward = module.forward
    # Choice 3 computes the wrong thing (and is the fastest of all); briefly, 9 looks fastest
    # and 6 fourth; in full, 6 is fastest.
    module.forward = lambda inputs: real_forward(inputs) * (2 if module.tile == 3 else 1)
    brief = {3: 0.1, 9: 1.0, 1: 1.1, 4: 1.2, 6: 1.3}
    full = {9: 2.0, 1: 2.1, 4: 2.2, 6: 1.5}
    timed = []

    def fake_graph_ms(call, device, rep=20):
        call()
        timed.append((module.tile, rep))
        return (brief if rep == quantize.BRIEF_REP_MS else full).get(module.tile, 5.0)

    monkeypatch.setattr(quantize, "graph_ms", fake_graph_ms)
    choices = [{"tile": tile} for tile in range(12)]
    assert quantize.keep_fastest(module, choices, x, expected, "c_fc") == {"tile": 6} and module.tile == 6
    assert sorted(tile for tile, rep in timed if rep == quantize.BRIEF_REP_MS) == [t for t in range(12) if t != 3]
    assert sorted(tile for tile, rep in timed if rep == quantize.FULL_REP_MS) == [1, 4, 6, 9]
    assert quantize.FINALISTS == 4
    # A few choices (fp8's four calls) are each timed in full at once.
    timed.clear()
    quantize.keep_fastest(module, [{"tile": tile} for tile in (1, 4)], x, expected, "c_proj")
    assert timed == [(1, quantize.FULL_REP_MS), (4, quantize.FULL_REP_MS)]


def assert_close_to_float32(kind: str, logits: torch.Tensor, reference: torch.Tensor) -> None:
    mean_limit, agreement_limit = QUANTIZED_TOLERANCE[kind]
    relative = (logits - reference).abs().mean().item() / reference.std().item()
    assert relative < mean_limit, f"{kind}: mean |logit diff| is {relative:.3f} std of the float32 logits"
    # Greedy choices agree almost everywhere (they may flip where the top two are close).
    agreement = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    assert agreement > agreement_limit, f"{kind}: argmax agrees at {agreement:.1%} of positions"


def test_tinygemm_computes_what_the_plain_int4_modules_compute(tiny_model, engine):
    """use_kernels(kind="tinygemm") through tinygemm's CPU port: the same logits as the
    plain modules, decode-sized and prompt-sized inputs, and no bigger."""
    from infill_ls.engine.quantize import use_kernels, weight_bytes

    ids = torch.tensor([prompt_ids(engine, SOURCE[:1200], SOURCE[1200:1500])])
    plain, switched = quantized_model(tiny_model, "int4wo"), quantized_model(tiny_model, "int4wo")
    before = weight_bytes(switched)
    counts = use_kernels(switched, torch.float32, "tinygemm")
    assert counts["plain"] == 0 and counts["kernel"] > 0
    assert weight_bytes(switched) <= before  # the kernel's tiles replace the plain codes
    with torch.inference_mode():
        for inputs in (ids, ids[:, :1]):  # a prompt, then one token
            expected = plain(input_ids=inputs).logits
            assert torch.allclose(switched(input_ids=inputs).logits, expected, atol=1e-3, rtol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU kernels need CUDA (CPU: test_gemv.py, tinygemm's port above)")
@pytest.mark.parametrize("kind, kernel", [("int8wo", "triton"), ("int4wo", "triton"), ("int4wo", "tinygemm")])
def test_weight_only_kernels_on_cuda(tiny_model, engine, kind, kernel):
    """On a GPU the engine switches the weight-only linears to a kernel; it must pass its
    check (a wrong layout would leave them plain) and give the plain modules' logits: for a
    prompt (plain), a draft check's 9 tokens (gemv.py's tensor-core kernels in bf16: Triton's
    interpreter gets a bf16 tl.dot wrong, so only a GPU checks them) and one token (the
    launch tune_launch chose; on gemv.py's kernels also with the dequantization folded out of
    the products, whichever launch it chose)."""
    import dataclasses

    from infill_ls.engine.quantize import Int4WeightOnlyLinear, Int8WeightOnlyLinear, use_kernels

    ids = torch.tensor([prompt_ids(engine, SOURCE[:1200], SOURCE[1200:1500])], device="cuda")
    plain = quantized_model(tiny_model, kind).to("cuda", torch.bfloat16)
    switched = quantized_model(tiny_model, kind).to("cuda", torch.bfloat16)
    assert use_kernels(switched, torch.bfloat16, kernel)["plain"] == 0
    with torch.inference_mode():
        for inputs in (ids, ids[:, :9], ids[:, :1]):
            expected = plain(input_ids=inputs).logits.float()
            assert (switched(input_ids=inputs).logits.float() - expected).abs().max() < 0.05 * expected.abs().max()
        if kernel == "triton":
            for linear in switched.modules():
                if isinstance(linear, (Int4WeightOnlyLinear, Int8WeightOnlyLinear)):
                    linear.plan = dataclasses.replace(linear.plan, fold=True, one_row_on_tensor_cores=False)
            expected = plain(input_ids=ids[:, :1]).logits.float()
            assert (switched(input_ids=ids[:, :1]).logits.float() - expected).abs().max() < 0.05 * expected.abs().max()


def test_a_weight_only_kernel_that_is_missing_or_wrong_is_not_used(tiny_model, monkeypatch):
    """Kernels differ by device and torch version: the check at load keeps the plain
    modules when one raises or disagrees (test doubles stand in for such a kernel)."""
    from infill_ls.engine import quantize

    real = quantize.Int4WeightOnlyLinear.switch_to_kernel

    # No Triton kernel runs on CPU tensors (without Triton, or without its interpreter):
    # every linear stays plain.
    model = quantized_model(tiny_model, "int8wo")
    assert quantize.use_kernels(model, torch.float32)["kernel"] == 0
    assert not any(m.plan for m in model.modules() if isinstance(m, quantize.Int8WeightOnlyLinear))

    def missing(self, kind):
        raise NotImplementedError("no _weight_int4pack_mm for this device")

    monkeypatch.setattr(quantize.Int4WeightOnlyLinear, "switch_to_kernel", missing)
    model = quantized_model(tiny_model, "int4wo")
    assert quantize.use_kernels(model, torch.float32, "tinygemm")["kernel"] == 0
    assert not any(getattr(m, "kernel", False) for m in model.modules())

    def wrong(self, kind):  # e.g. a nibble order the kernel does not expect
        real(self, kind)
        self.scales_and_zeros[..., 0] *= 2

    monkeypatch.setattr(quantize.Int4WeightOnlyLinear, "switch_to_kernel", wrong)
    model = quantized_model(tiny_model, "int4wo")
    linears = [m for m in model.modules() if isinstance(m, quantize.Int4WeightOnlyLinear)]
    assert quantize.use_kernels(model, torch.float32, "tinygemm") == {"kernel": 0, "plain": len(linears)}
    assert all(not m.kernel and hasattr(m, "packed") and not hasattr(m, "tiles") for m in linears)


def test_fast_decoding_compiles_weight_only_models_only_on_the_triton_kernels(tiny_model):
    """Compiled, the plain modules and tinygemm decoded slower than eager on a GPU; on
    gemv.py's kernels int8wo decoded 2.8x faster.  (Plans are set by hand: no kernel runs here.)"""
    from infill_ls.engine import gemv
    from infill_ls.engine.local import compiles_faster
    from infill_ls.engine.quantize import Int8WeightOnlyLinear

    model = quantized_model(tiny_model, "int8wo")
    assert not compiles_faster(model, "int8wo")  # plain modules
    linears = [m for m in model.modules() if isinstance(m, Int8WeightOnlyLinear)]
    for linear in linears:
        linear.plan = gemv.launch(linear.out_features, linear.in_features, 64, torch.device("cpu"))
    assert compiles_faster(model, "int8wo")
    linears[0].switch_to_plain()  # one shape whose kernel failed its check
    assert not compiles_faster(model, "int8wo")
    assert compiles_faster(model, "bf16") and not compiles_faster(model, "4bit")


def test_weight_only_int8_and_int4_shrink_the_linears(tiny_model):
    from infill_ls.engine.quantize import weight_bytes

    sizes = {kind: weight_bytes(quantized_model(tiny_model, kind)) for kind in ("float32", "int8wo", "int4wo")}
    assert sizes["int4wo"] < sizes["int8wo"] < sizes["float32"]


def test_int4wo_makes_an_untied_output_projection_int8(head_models):
    """int4wo's output projection: int8 where it is a matrix of its own (quantize.HEAD_KINDS),
    untouched where it is the embedding table.  Same weights either way, so the two models'
    logits differ by the head's int8 rounding alone, which must be small beside what int4
    does to the body."""
    from infill_ls.engine.quantize import Int8WeightOnlyLinear

    untied = load_engine(head_models["untied"], quantization="int4wo", device="cpu")
    tied = load_engine(head_models["tied"], quantization="int4wo", device="cpu")
    assert isinstance(untied.model.lm_head, Int8WeightOnlyLinear)
    assert tied.model.lm_head.weight is tied.model.get_input_embeddings().weight
    ids = torch.tensor([prompt_ids(tied, SOURCE[:1200], SOURCE[1200:1500])])
    with torch.inference_mode():
        reference = load_engine(head_models["untied"]).model(input_ids=ids).logits.float()
        with_int8_head = untied.model(input_ids=ids).logits.float()
        with_float_head = tied.model(input_ids=ids).logits.float()
    assert_close_to_float32("int4wo", with_int8_head, reference)
    head_rounding = (with_int8_head - with_float_head).abs().mean().item()
    body_rounding = (with_float_head - reference).abs().mean().item()
    print(f"mean |logit difference|: int8 head {head_rounding:.4f}, int4 body {body_rounding:.4f}")
    assert 0 < head_rounding < 0.25 * body_rounding


@pytest.mark.parametrize("kind", ["int8wo", "int8dyn", "fp8"])  # int8dyn: auto's choice for large models on CPUs without bf16
def test_the_server_loads_a_quantized_model(tiny_model, kind):
    engine = load_engine(tiny_model, quantization=kind, device="cpu")
    assert engine.info.precision == kind
    assert generate(engine, prompt_ids(engine, SOURCE[:300], "")).token_ids


# ----- time box and idle unloading, through the server -----

LONG = {"debounceMs": 0, "maxNewTokens": 1900, "contextTokens": 2048, "multiline": "always", "promptLookup": False}


@pytest.mark.asyncio(loop_scope="function")
async def test_time_box_returns_the_text_so_far(tiny_model):
    from reference import reference_generation

    text = "def f(x):\n    \n"
    # 1,900 tokens take the tiny model many seconds; the time box is 0.3 s.
    lsp = await start_client("--model", str(tiny_model), "--quantization", "none",
                             initialization_options={**LONG, "timeoutMs": 300})
    try:
        await wait_until_loaded(lsp)
        open_document(lsp, "file:///work/timebox.py", text)
        result = await inline(lsp, "file:///work/timebox.py", 1, 4)
        status = await server_status(lsp)
    finally:
        await stop_client(lsp)
    # The stop rules may end the tiny model's text before the time box on a fast machine;
    # either way exactly one generation ran and it never outlived the box by more than a token
    # (the deterministic check of the box is test_deadline_stops_the_loop_at_the_next_token).
    ended = {k: v for k, v in status["counters"].items() if k in ("timeout", "rule", "eos", "length")}
    assert sum(ended.values()) == 1 and "length" not in ended, status["counters"]
    generated = status["lastGeneratedTokens"]
    assert generated < LONG["maxNewTokens"]
    # What comes back is the start of what the model generates, never anything else.
    raw = reference_generation(tiny_model, text[: len("def f(x):\n    ")], "\n", generated)
    suggestion = result.items[0].insert_text if result.items else ""
    squeeze = lambda value: "".join(value.split())  # noqa: E731  (the server trims trailing spaces)
    assert squeeze(raw).startswith(squeeze(suggestion))


@pytest.mark.asyncio(loop_scope="function")
async def test_idle_unload_frees_the_model_and_the_next_request_reloads_it(tiny_model):
    text = "import os\n\ndef total(values):\n    result = \n"
    options = {"debounceMs": 0, "timeoutMs": 600000, "idleUnloadMinutes": 0.01}  # 0.6 s
    lsp = await start_client("--model", str(tiny_model), initialization_options=options)
    try:
        assert (await wait_until_loaded(lsp))["state"] == "ready"
        open_document(lsp, "file:///work/idle.py", text)
        before = await inline(lsp, "file:///work/idle.py", 3, 13)
        # Idle time counts from the load, not from the server's start (a load slower than
        # the idle time was undone before the request that waited for it was served).
        assert before.items, "the request right after the load got nothing"
        for _ in range(200):
            status = await server_status(lsp)
            if status["state"] == "unloaded":
                break
            await asyncio.sleep(0.05)
        assert status["state"] == "unloaded", status
        after = await inline(lsp, "file:///work/idle.py", 3, 13)
        reloaded = await server_status(lsp)
        progress_titles = [
            getattr(value, "title", None) for _token, values in lsp.progress_reports.items() for value in values
        ]
    finally:
        await stop_client(lsp)
    assert [i.insert_text for i in after.items] == [i.insert_text for i in before.items]
    assert reloaded["state"] in ("ready", "unloaded")
    assert progress_titles.count("infill-ls: loading model") == 2


def test_idle_unload_setting_is_validated():
    settings, errors = Settings().merged({"idleUnloadMinutes": -1})
    assert settings.idleUnloadMinutes == 0 and "idleUnloadMinutes" in errors[0]
    settings, errors = Settings().merged({"idleUnloadMinutes": 0.5, "promptLookup": False, "quantization": "int4wo"})
    assert not errors and settings.idleUnloadMinutes == 0.5 and settings.quantization == "int4wo"


# ----- cancellation -----


def test_a_cancel_flag_set_during_generation_stops_the_loop_at_the_next_token(engine):
    """The flag $/cancelRequest sets (scheduler.py) is read after every token."""
    import threading

    cancel = threading.Event()
    seen: list[str] = []

    def cancel_after_three_tokens(text: str):
        seen.append(text)
        if len(seen) == 3:  # another thread would do this; the effect is the same
            cancel.set()
        return None

    ids = prompt_ids(engine, "def f(x):\n    ", "\n")
    result = generate(engine, ids, max_new_tokens=500, stop_rule=cancel_after_three_tokens, cancel=cancel,
                      prompt_lookup=False)
    assert result.stop_reason == "cancelled"
    assert len(result.token_ids) == 3


def test_prompts_never_exceed_the_models_trained_length(tiny_model, tmp_path):
    """contextTokens above max_position_embeddings is capped to it (a model degrades past it)."""
    from infill_ls.completion import suggest

    short = tmp_path / "short"
    shutil.copytree(tiny_model, short)
    config = json.loads((short / "config.json").read_text())
    config["max_position_embeddings"] = 256
    (short / "config.json").write_text(json.dumps(config))
    engine = load_engine(short)
    long_prefix = "".join(f"value_{i} = {i}\n" for i in range(2000))
    result = suggest(engine, CursorContext(long_prefix, "\n"), Settings(model=str(short), contextTokens=2048, maxNewTokens=16))
    assert len(result.prompt) <= 256 - 16


def test_deadline_stops_the_loop_at_the_next_token(engine):
    """The time box: past the deadline the text so far is returned, never more."""
    import time as clock

    calls: list[str] = []

    def slow_rule(text: str):
        calls.append(text)
        clock.sleep(0.05)  # a slow model: each token takes 50 ms
        return None

    ids = prompt_ids(engine, "def f(x):\n    ", "\n")
    result = generate(engine, ids, max_new_tokens=500, stop_rule=slow_rule, prompt_lookup=False,
                      deadline=clock.monotonic() + 0.2)
    assert result.stop_reason == "timeout"
    assert 1 <= len(result.token_ids) < 20
    assert result.token_ids == reference_ids(engine, ids, 30)[: len(result.token_ids)]
