"""Train the bundled FIM model end to end: corpus -> tokenizer -> Starcoder2ForCausalLM -> export.

    python -m training.train --preset gpu-small --device cuda --workers 14 --threads 4 --seed 0 --max-minutes 7.4
                                                    # the shipped model (one H100, ~8 minutes)
    python -m training.train --preset cpu-small --seed 0 --max-minutes 85   # without a GPU (much weaker)

Everything is seeded; the corpus and tokenizer are rebuilt only when missing.  A
checkpoint (loadable with from_pretrained) is exported every --save-every steps, so a
run that is cut off still leaves a usable model; --resume continues from the last one.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .data import build_corpus, load_split
from .samples import CROSS_FILE_SHARE, SampleMaker, all_windows
from .tokenizer import EOS, FIM_PAD, SPECIAL_TOKENS, load_tokenizer, tokenizer_sample, train_tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXPORT = REPO_ROOT / "server" / "infill_ls" / "models" / "infill-small"


@dataclass
class Preset:
    vocab_size: int
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    intermediate_size: int
    seq_len: int
    batch_size: int
    lr: float
    max_steps: int
    warmup_steps: int


PRESETS = {
    # Trainable on a 2-core CPU (the first shipped model, 3.2M tokens in 87 minutes); a
    # 16-token suggestion after a 1,024-token prompt in ~100 ms on 2 cores.
    "cpu-small": Preset(4096, 256, 4, 4, 2, 1024, 1024, 4, 2e-3, 900, 30),
    # The shipped model (one H100, ~8 minutes): cpu-small's compute per token, so it still
    # answers in ~100 ms on 2 CPU cores, with a larger vocabulary (more code per token),
    # a 2,048-token context and ~100x the tokens.
    "gpu-small": Preset(8192, 256, 4, 4, 2, 1024, 2048, 64, 2e-3, 40000, 200),
    # A bigger model for a longer GPU session (~25M parameters; too slow for the CPU target).
    "gpu-base": Preset(8192, 512, 8, 8, 4, 2048, 2048, 32, 1e-3, 12000, 300),
}


def build_model(p: Preset):
    from transformers import Starcoder2Config, Starcoder2ForCausalLM

    config = Starcoder2Config(
        vocab_size=p.vocab_size,
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.kv_heads,
        max_position_embeddings=p.seq_len,  # trained context: prompts longer than this degrade
        sliding_window=None,
        rope_theta=10000.0,
        bos_token_id=EOS,
        eos_token_id=EOS,
        tie_word_embeddings=True,
        residual_dropout=0.0,
        embedding_dropout=0.0,
        attention_dropout=0.0,
    )
    return Starcoder2ForCausalLM(config)


class Batches(torch.utils.data.IterableDataset):
    """Endless packed batches, made in DataLoader worker processes (sample making is Python)."""

    def __init__(self, repos, tokenizer, seed: int, preset: Preset, windows: dict, cross_file_share: float,
                 cross_file_unseen: float = 0.0, import_share: float = 0.0):
        self.repos, self.tokenizer, self.seed, self.preset, self.windows = repos, tokenizer, seed, preset, windows
        self.cross_file_share, self.cross_file_unseen = cross_file_share, cross_file_unseen
        self.import_share = import_share

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        sampler = SampleMaker(self.repos, self.tokenizer, self.seed * 1000 + worker, windows=self.windows,
                              cross_file_share=self.cross_file_share, cross_file_unseen=self.cross_file_unseen,
                              import_share=self.import_share)
        while True:
            yield tuple(torch.tensor(x) for x in sampler.rows(self.preset.batch_size, self.preset.seq_len, FIM_PAD))


def learning_rate(p: Preset, progress: float, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% as progress goes 0 -> 1."""
    if step < p.warmup_steps:
        return p.lr * (step + 1) / p.warmup_steps
    return p.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def export(model, tokenizer, out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "training_state.json").write_text(json.dumps(meta, indent=1))


def init_from(model, tokenizer, preset: Preset, source: Path) -> list[dict]:
    """Load an exported model's weights into ``model``; its training history (one entry per
    earlier run) for the new run's metadata.  The shape and the tokenizer must match."""
    from transformers import AutoModelForCausalLM

    previous = json.loads((source / "training_state.json").read_text())
    shape = ("vocab_size", "hidden_size", "layers", "heads", "kv_heads", "intermediate_size")
    if any(previous["config"][k] != asdict(preset)[k] for k in shape):
        raise SystemExit(f"{source} has another shape than preset {preset}: {previous['config']}")
    if load_tokenizer(source).get_vocab() != tokenizer.get_vocab():
        raise SystemExit(f"{source} has another tokenizer than this run's")
    weights = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).state_dict()
    model.load_state_dict(weights)
    leg = {k: previous[k] for k in ("preset", "seed", "step", "tokens", "train_minutes", "device", "heldout_loss",
                                    "heldout_middle_loss") if k in previous}
    return [*previous.get("earlier_legs", []), leg]


def losses(model, inputs, labels, middle, bf16: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss over all tokens, and over the FIM middles (plus their <|endoftext|>) alone."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=inputs).logits
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="none"
    )
    counted = labels[:, 1:].flatten() != -100
    in_middle = middle[:, 1:].flatten() & counted
    all_loss = per_token[counted].mean()
    middle_loss = per_token[in_middle].mean() if in_middle.any() else all_loss.new_zeros(())
    return all_loss, middle_loss


@torch.no_grad()
def heldout_loss(model, batches, device) -> tuple[float, float]:
    model.eval()
    results = [losses(model, *(x.to(device) for x in batch)) for batch in batches]
    model.train()
    return (sum(a.item() for a, _ in results) / len(results), sum(m.item() for _, m in results) / len(results))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="gpu-small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes making samples (0: in the training loop; a GPU needs ~12 to be kept busy)")
    ap.add_argument("--work", type=Path, default=REPO_ROOT / "training" / "work")
    ap.add_argument("--out", type=Path, default=DEFAULT_EXPORT, help="where the final model is exported")
    ap.add_argument("--max-steps", type=int, help="override the preset")
    ap.add_argument("--batch-size", type=int, help="override the preset (rows per step)")
    ap.add_argument("--lr", type=float, help="override the preset's peak learning rate")
    ap.add_argument("--warmup-steps", type=int, help="override the preset")
    ap.add_argument("--max-minutes", type=float, help="wall-clock budget: the LR schedule ends on time")
    ap.add_argument("--save-every", type=int, default=100)
    # A CPU without bf16 instructions (no AVX512-BF16/AMX) emulates them: on such a 2-core VM
    # training ran at 934 tokens/s in bf16 and 1,475 in float32 (training/README.md).
    # The held-out loss stays in bf16 either way, so legs remain comparable.
    ap.add_argument("--float32", action="store_true", help="train without bf16 autocast")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", type=Path,
                    help="start from this exported model's weights (e.g. the shipped one) with a fresh optimizer and "
                         "schedule: another training leg where state.pt (58 MB) cannot travel to the GPU machine")
    ap.add_argument("--cross-file-share", type=float, default=CROSS_FILE_SHARE,
                    help="the share of FIM samples whose hole starts at a name only another file of the package "
                         "defines (with snippets); 0: the shipped model's samples")
    ap.add_argument("--cross-file-unseen", type=float, nargs="?", const=1.0, default=0.0, metavar="SHARE",
                    help="this share of the cross-file holes (all when no share is given) only at names the rest "
                         "of the file never mentions, with the name in the prompt's snippets (the model must copy "
                         "it from them)")
    ap.add_argument("--import-share", type=float, default=0.0, metavar="SHARE",
                    help="this share of FIM samples holes the module name of an import of another file of the "
                         "package, with that file among the snippets (0: none, the shipped model's samples)")
    ap.add_argument("--middle-loss-weight", type=float, default=1.0,
                    help="weight of the extra loss on FIM middles (0: plain next-token loss over everything)")
    args = ap.parse_args(argv)

    preset = PRESETS[args.preset]
    # Overrides of the preset that keep the model's shape (so --init-from still fits): a
    # short fine-tuning leg on a CPU wants small batches and a gentler schedule.
    for name in ("max_steps", "batch_size", "lr", "warmup_steps"):
        if getattr(args, name) is not None:
            setattr(preset, name, getattr(args, name))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = torch.device(args.device)
    run_dir = args.work / f"run-{args.preset}-seed{args.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "log.jsonl", "a")

    data_dir = args.work / "data"
    if not (data_dir / "manifest.json").exists():
        build_corpus(data_dir, args.seed)
    train_repos = load_split(data_dir / "train.jsonl")
    heldout_repos = load_split(data_dir / "heldout.jsonl")

    tok_dir = args.work / f"tokenizer-{preset.vocab_size}-seed{args.seed}"
    if not (tok_dir / "tokenizer.json").exists():
        texts = tokenizer_sample([f for fs in train_repos.values() for f in fs], args.seed)
        tokenizer = train_tokenizer(texts, preset.vocab_size, preset.seq_len)
        tokenizer.save_pretrained(tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(len(SPECIAL_TOKENS)))

    model = build_model(preset).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,} ({n_params - preset.vocab_size * preset.hidden_size:,} without embeddings)", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=preset.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    windows = all_windows(train_repos)
    sampler = SampleMaker(train_repos, tokenizer, args.seed, windows=windows, cross_file_share=args.cross_file_share,
                          cross_file_unseen=args.cross_file_unseen, import_share=args.import_share)
    # The held-out batches are drawn as every leg's were (no cross-file holes): comparable losses.
    heldout_sampler = SampleMaker(heldout_repos, tokenizer, args.seed + 1, cross_file_share=0.0)
    heldout_batches = [
        tuple(torch.tensor(x) for x in heldout_sampler.rows(4, preset.seq_len, FIM_PAD)) for _ in range(4)
    ]

    step, elapsed_before, tokens_seen = 0, 0.0, 0
    earlier_legs: list = []  # what the weights had learned before this run (--init-from), oldest first
    state_file = run_dir / "state.pt"
    if args.resume and state_file.exists():
        state = torch.load(state_file, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.rng.setstate(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        step, elapsed_before, tokens_seen = state["step"], state["elapsed"], state["tokens"]
        earlier_legs = state.get("earlier_legs", [])
        print(f"resumed at step {step}", flush=True)
    elif args.init_from:
        earlier_legs = init_from(model, tokenizer, preset, args.init_from)
        print(f"starting from {args.init_from} ({sum(leg['tokens'] for leg in earlier_legs):,} tokens trained)", flush=True)

    def save(final: bool) -> None:
        meta = {
            "preset": args.preset, "config": asdict(preset), "seed": args.seed, "step": step,
            "tokens": tokens_seen, "train_minutes": round(elapsed / 60, 1), "device": str(device),
            "threads": args.threads, "parameters": n_params, "final": final,
            "middle_loss_weight": args.middle_loss_weight, "cross_file_share": args.cross_file_share,
            "cross_file_unseen": args.cross_file_unseen, "import_share": args.import_share, "float32": args.float32,
            "earlier_legs": earlier_legs,
        }
        meta["heldout_loss"], meta["heldout_middle_loss"] = heldout_loss(model, heldout_batches, device)
        export(model, tokenizer, run_dir / "checkpoint", meta)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "elapsed": elapsed, "tokens": tokens_seen, "earlier_legs": earlier_legs,
                    "sampler_rng": sampler.rng.getstate(),
                    "torch_rng": torch.get_rng_state()}, state_file)
        if final:
            export(model, tokenizer, args.out, meta)
        log.write(json.dumps({"event": "save", **meta}) + "\n")
        log.flush()
        print(f"saved step {step}: heldout loss {meta['heldout_loss']:.3f}, middles {meta['heldout_middle_loss']:.3f}", flush=True)

    batches = None
    if args.workers:
        # Workers draw from their own seeds (seed*1000 + worker): reproducible for a given
        # worker count; --resume restarts their streams.
        # Forked workers share the parent's corpus and windows; frozen, the parent's objects
        # are left out of the workers' garbage collections, which would copy their pages.
        gc.freeze()
        batches_made = Batches(train_repos, tokenizer, args.seed, preset, windows, args.cross_file_share,
                               args.cross_file_unseen, args.import_share)
        loader = torch.utils.data.DataLoader(batches_made, batch_size=None,
                                             num_workers=args.workers, pin_memory=device.type == "cuda",
                                             prefetch_factor=4)
        batches = iter(loader)
    model.train()
    start = time.time() - elapsed_before
    window_start, window_tokens = time.time(), 0
    while True:
        elapsed = time.time() - start
        progress = step / preset.max_steps
        if args.max_minutes:
            progress = max(progress, elapsed / (args.max_minutes * 60))
        if progress >= 1.0:
            break
        lr = learning_rate(preset, progress, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if batches is not None:
            inputs, labels, middle = (x.to(device, non_blocking=True) for x in next(batches))
        else:
            inputs, labels, middle = (torch.tensor(x, device=device) for x in sampler.rows(preset.batch_size, preset.seq_len, FIM_PAD))
        all_loss, middle_loss = losses(model, inputs, labels, middle, bf16=not args.float32)
        # Middles are a small share of the tokens; the extra term makes infilling learn early.
        loss = all_loss + args.middle_loss_weight * middle_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += inputs.numel()
        window_tokens += inputs.numel()
        if step % 10 == 0:
            rate = window_tokens / (time.time() - window_start)
            window_start, window_tokens = time.time(), 0
            row = {"step": step, "loss": round(all_loss.item(), 4), "middle_loss": round(middle_loss.item(), 4), "lr": lr, "tok_per_s": round(rate),
                   "minutes": round(elapsed / 60, 2), "progress": round(progress, 4)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(row, flush=True)
        if step % args.save_every == 0:
            elapsed = time.time() - start
            save(final=False)
    elapsed = time.time() - start
    save(final=True)


if __name__ == "__main__":
    main()
