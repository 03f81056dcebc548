"""Quality guard for the quantized paths: logits and greedy output against float32.

    python bench/quality.py [--model DIR]      (default: the tiny test model)

For each precision (bf16, int8wo, int4wo, int4wo-untied: int4wo where the output
projection is not tied to the embedding table, which makes it int8, int8dyn, int8dyn-ao:
the old int8dyn, and fp8): max and mean |logit difference| over every position of a few real-code prompts,
the share of positions whose argmax agrees, and whether a 32-token greedy suggestion is
exactly the float32 one.
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

from common import summary, write_result
from engines import pytorch_dynamic_int8

KINDS = ("bf16", "int8wo", "int4wo", "int4wo-untied", "int8dyn", "int8dyn-ao", "fp8")


def load(model_dir: str, kind: str):
    import torch
    from transformers import AutoModelForCausalLM

    from infill_ls.engine.quantize import quantize_weights

    dtype = torch.bfloat16 if kind == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    if kind == "int8dyn-ao":
        return pytorch_dynamic_int8(model)
    if kind == "int4wo-untied":  # the head a matrix of its own, as StarCoder2-15B's: int4wo makes it int8
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
        return quantize_weights(model, "int4wo")
    return model if kind in ("float32", "bf16") else quantize_weights(model, kind)


def prompts(tokenizer, count: int = 4, length: int = 400) -> list[list[int]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text()[2000:8000] for name in ("textwrap.py", "shlex.py", "fnmatch.py", "bisect.py")]
    return [tokenizer(text, add_special_tokens=False)["input_ids"][:length] for text in texts[:count]]


def compare(model_dir: str) -> dict:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cases = prompts(tokenizer)
    reference = load(model_dir, "float32")
    results = {}
    with torch.inference_mode():
        base_logits = [reference(input_ids=torch.tensor([ids])).logits.float()[0] for ids in cases]
        base_greedy = [reference.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False, pad_token_id=0)[0, len(ids):].tolist() for ids in cases]
        for kind in KINDS:
            model = load(model_dir, kind)
            max_diff, mean_diff, agree, exact = [], [], [], 0
            for ids, base, greedy in zip(cases, base_logits, base_greedy):
                logits = model(input_ids=torch.tensor([ids])).logits.float()[0]
                difference = (logits - base).abs()
                max_diff.append(difference.max().item())
                mean_diff.append(difference.mean().item())
                agree.append((logits.argmax(-1) == base.argmax(-1)).float().mean().item())
                out = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False, pad_token_id=0)
                exact += out[0, len(ids):].tolist() == greedy
            results[kind] = {
                "max_abs_logit_diff": round(max(max_diff), 5),
                "mean_abs_logit_diff": round(sum(mean_diff) / len(mean_diff), 5),
                "logit_std_float32": round(torch.cat(base_logits).std().item(), 5),
                "argmax_agreement": round(sum(agree) / len(agree), 4),
                "greedy_exact_match": f"{exact}/{len(cases)}",
            }
            print(kind, results[kind], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the tiny test model)")
    args = parser.parse_args()
    if args.model is None:
        from conftest import tiny_model_dir

        args.model = str(tiny_model_dir())
    results = compare(args.model)
    print(write_result("quality", {"model": args.model, "results": results}))


if __name__ == "__main__":
    main()
