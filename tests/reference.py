"""An independent reference: what the model itself generates for a FIM prompt.

Built with the tokenizer and ``model.generate`` directly, not with infill-ls code,
so a test comparing the server's answer with it checks the whole path.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=4)
def _load(model_dir: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir).eval()


def reference_generation(model_dir: Path, prefix: str, suffix: str, max_new_tokens: int) -> str:
    """Greedy text the model generates between ``prefix`` and ``suffix`` (StarCoder2 PSM layout)."""
    import torch

    tokenizer, model = _load(str(model_dir))
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    special = tokenizer.convert_tokens_to_ids
    ids = [special("<fim_prefix>"), *encode(prefix), special("<fim_suffix>"), *encode(suffix), special("<fim_middle>")]
    stop = [special(t) for t in ("<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<file_sep>", "<repo_name>")]
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop, pad_token_id=0
        )
    new = [t for t in out[0, len(ids):].tolist() if t not in stop]
    return tokenizer.decode(new)


def reference_suggestion(model_dir: Path, prefix: str, suffix: str, max_new_tokens: int = 64, language: str = "python") -> str | None:
    """The reference generation shaped by infill-ls's post-processing rules (tested on their own
    in test_postprocess.py): what the server must answer for this cursor."""
    return shaped(reference_generation(model_dir, prefix, suffix, max_new_tokens), prefix, suffix, language)


def shaped(raw: str, prefix: str, suffix: str, language: str = "python") -> str | None:
    """Raw model text after infill-ls's post-processing rules for this cursor."""
    from infill_ls.postprocess import CursorContext, cursor_syntax, finish_suggestion

    context = CursorContext(prefix=prefix, suffix=suffix, language=language)
    suggestion = finish_suggestion(raw, context, cursor_syntax(context, "auto"))
    return suggestion.text if suggestion else None
