"""Building engines on random weights for the benchmarks (latency does not depend on weight values)."""

from __future__ import annotations

import time

from common import summary

# The bundled model's shape (training/train.py preset gpu-small) and StarCoder2-15B's.
BUNDLED = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=1024, vocab_size=8192, sliding_window=4096)
STARCODER2_15B = dict(hidden_size=6144, num_hidden_layers=40, num_attention_heads=48, num_key_value_heads=4,
                      intermediate_size=24576, vocab_size=49152, sliding_window=4096)
# 4 of StarCoder2-3B's 30 layers, its vocabulary: where a CPU's time goes to reading weights.
STARCODER2_3B_4_LAYERS = dict(hidden_size=3072, num_hidden_layers=4, num_attention_heads=24, num_key_value_heads=2,
                              intermediate_size=12288, vocab_size=49152, sliding_window=4096)
# A laptop-sized stand-in for StarCoder2-15B, to run the GPU script's code on a CPU.
SMALL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=512, vocab_size=2048, sliding_window=4096)


def random_model(shape: dict, dtype, device: str):
    """A StarCoder2 model with random weights, created directly on ``device``."""
    import torch
    from transformers import Starcoder2Config, Starcoder2ForCausalLM

    config = Starcoder2Config(**shape, max_position_embeddings=16384, bos_token_id=0, eos_token_id=0,
                              tie_word_embeddings=False, dtype=dtype)
    with torch.device("meta"):
        model = Starcoder2ForCausalLM(config)
    # Cast while still on the meta device: a float32 15B model would not fit an H100.
    model = model.to(dtype).to_empty(device=device)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.fill_(1.0)
            elif name.endswith("bias"):
                parameter.zero_()
            else:
                parameter.normal_(0, 0.02)
        # Keep the random model off its end-of-text token so decoding runs its full length.
        model.lm_head.weight[0].zero_()
    # Its buffers were left empty on the meta device: build it again for real.
    model.model.rotary_emb = type(model.model.rotary_emb)(config).to(device)
    return model.eval()


def pytorch_dynamic_int8(model):
    """PyTorch's quantize_dynamic, the server's int8dyn until 2026-11-27 (one activation scale
    per call): the baseline of its replacement, quantize.DynamicInt8Linear."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


class NumberTokenizer:
    """Just enough of a tokenizer for the engine to decode random token ids."""

    eos_token_id = 0

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def get_vocab(self) -> dict:
        return {"<|endoftext|>": 0}

    def decode(self, ids, **kwargs) -> str:
        return "".join(f"t{i} " for i in ids)


def engine_for(model, name: str, precision: str):
    from infill_ls.engine.local import LocalEngine, ModelInfo
    from infill_ls.prompt import PromptTokenizer
    from infill_ls.templates import TEMPLATES

    tokenizer = PromptTokenizer(NumberTokenizer(model.config.vocab_size))
    info = ModelInfo(name=name, device=str(next(model.parameters()).device), precision=precision,
                     reason="benchmark", parameters=sum(p.numel() for p in model.parameters()), template="starcoder2")
    return LocalEngine(model, tokenizer, TEMPLATES["starcoder2"], info)


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def synchronized_ms(call) -> float:
    """Milliseconds of one ``call``, the GPU's queued work included."""
    synchronize()
    started = time.perf_counter()
    call()
    synchronize()
    return (time.perf_counter() - started) * 1000


def time_engine(engine, prompt_tokens: int, new_tokens: int, runs: int = 3, prompt_lookup: bool = False,
                repetitive: bool = False, warmup: bool = True) -> dict:
    """Prefill ms for ``prompt_tokens`` and decode ms/token over ``new_tokens``, through the engine's own loop.

    ``repetitive`` builds the prompt from one 64-token piece repeated, the case prompt lookup is for.
    ``warmup=False`` skips the untimed first run, for a caller that warmed the engine up itself.
    """
    import random

    from infill_ls.engine.base import GenerationRequest

    rng = random.Random(0)
    vocab = engine.model.config.vocab_size
    prefill, per_token = [], []
    # One untimed run first: a path's first prompt of a size picks its kernels (the 15B
    # shape's first static-cache prefill took 205 ms, the next 99, H200 2026-11-26).
    for run in range(0 if warmup else 1, runs + 1):
        ids = [rng.randrange(1, vocab) for _ in range(64 if repetitive else prompt_tokens)]
        ids = (ids * (prompt_tokens // len(ids) + 1))[:prompt_tokens]
        engine.clear_prompt_cache()
        synchronize()
        generation = engine.generate(GenerationRequest(prompt_ids=ids, max_new_tokens=new_tokens, prompt_lookup=prompt_lookup))
        synchronize()
        if run:
            prefill.append(generation.prefill_ms)
            per_token.append(generation.decode_ms / max(len(generation.token_ids) - 1, 1))
    return {"prefill_ms": summary(prefill), "decode_ms_per_token": summary(per_token), "path": generation.path,
            "generated_tokens": len(generation.token_ids), "draft_tokens": generation.draft_tokens,
            "accepted_draft_tokens": generation.accepted_draft_tokens}


def time_generate(model, prompt_tokens: int, new_tokens: int, runs: int = 3) -> dict:
    """The baseline: plain ``model.generate`` (eager), prefill and decode separated by timing 1 and N tokens."""
    import torch

    ids = torch.randint(1, model.config.vocab_size, (1, prompt_tokens), device=next(model.parameters()).device)

    def run(count: int) -> float:
        synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=count, min_new_tokens=count, do_sample=False, pad_token_id=0)
        synchronize()
        return (time.perf_counter() - started) * 1000

    run(2)  # warm-up
    first = [run(1) for _ in range(runs)]
    full = [run(new_tokens) for _ in range(runs)]
    decode = [(f - p) / (new_tokens - 1) for f, p in zip(full, first)]
    return {"prefill_ms": summary(first), "decode_ms_per_token": summary(decode)}
