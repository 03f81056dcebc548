"""How long fast.py's decode step takes to compile, per layer (the server's way) and whole.

    python bench/compile_time.py                 # 40 layers of a small StarCoder2, inductor on this CPU
    python bench/compile_time.py --layers 8 --repeats 2

Each compile runs in a process of its own with an empty inductor cache (a warm cache would
hide the work), times ``StaticDecoder.compile`` for the one-token step and checks the compiled
decoder's logits against the uncompiled one's.  The shape is small so that the time is the
compiler's per-operation work (tracing and lowering), which is what grows with the depth;
bench/gpu.py's ``compile_s`` is the 15B shape's on a GPU (``+whole`` variants compile whole).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import summary, write_result


def compile_once(layers: int, whole: bool) -> dict:
    import torch
    from transformers import Starcoder2Config, Starcoder2ForCausalLM

    from infill_ls.engine import fast

    torch.manual_seed(0)
    config = Starcoder2Config(vocab_size=1000, hidden_size=128, intermediate_size=512, num_hidden_layers=layers,
                              num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512)
    model = Starcoder2ForCausalLM(config).eval()
    compiled, plain = fast.StaticDecoder(model, 128), fast.StaticDecoder(model, 128)
    started = time.perf_counter()
    compiled.compile(whole_model=whole, warmup_runs=1)
    seconds = time.perf_counter() - started
    ids = torch.randint(0, config.vocab_size, (40,)).tolist()
    with torch.inference_mode():
        got = [compiled.step(ids[:30], 0, keep=1)] + [compiled.step([t], 30 + i) for i, t in enumerate(ids[30:])]
        want = [plain.step(ids[:30], 0, keep=1)] + [plain.step([t], 30 + i) for i, t in enumerate(ids[30:])]
    return {"compile_s": round(seconds, 2), "max_logit_diff": (torch.cat(got) - torch.cat(want)).abs().max().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1, help="compiles per way, each in a fresh process")
    parser.add_argument("--one", choices=("layer", "whole"), help=argparse.SUPPRESS)  # a child process's own run
    args = parser.parse_args()
    if args.one:
        print(json.dumps(compile_once(args.layers, args.one == "whole")))
        return
    results = {}
    for way in ("layer", "whole"):
        runs = []
        for _ in range(args.repeats):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="infill-inductor-")}
            done = subprocess.run([sys.executable, __file__, "--one", way, "--layers", str(args.layers)], env=env,
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(way, runs[-1], flush=True)
        results[way] = {"compile_s": summary([run["compile_s"] for run in runs]),
                        "max_logit_diff": max(run["max_logit_diff"] for run in runs)}
    results["whole_over_layer"] = round(results["whole"]["compile_s"]["p50"] / results["layer"]["compile_s"]["p50"], 1)
    print(write_result("compile-time", {"layers": args.layers, "device": "cpu", "results": results}))


if __name__ == "__main__":
    main()
