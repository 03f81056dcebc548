"""The bundled model (server/infill_ls/models/infill-small): a StarCoder2 checkpoint that
loads like any other and completes held-out-style code plausibly.

Assertions are on properties (a parenthesis gets closed, an imported module exists in
the context), not on exact strings a retrain would change.

Leg 9 (2026-11-27, training/MODEL_CARD.md) is the first to pass the import test: after
`from shapes.` it names a module of the repository context; earlier legs wrote `typing`
or `__all__` there, and the test carried a strict xfail mark until the weights met it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "server"))
MODEL_DIR = REPO_ROOT / "server" / "infill_ls" / "models" / "infill-small"
STARCODER2_SPECIAL_IDS = {
    "<|endoftext|>": 0, "<fim_prefix>": 1, "<fim_middle>": 2, "<fim_suffix>": 3,
    "<fim_pad>": 4, "<repo_name>": 5, "<file_sep>": 6,
}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    return AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()


def fim_ids(tokenizer, prefix: str, suffix: str, context: dict[str, str] | None = None, path: str = "") -> list[int]:
    """The prompt infill-ls sends: the server's own prompt builder and StarCoder2 layout."""
    from infill_ls.prompt import ContextFile, PromptTokenizer, RepoContext, build_fim_prompt
    from infill_ls.templates import TEMPLATES

    repo = None
    if context is not None:
        repo = RepoContext("demo", path, [ContextFile(p, code) for p, code in context.items()])
    return build_fim_prompt(PromptTokenizer(tokenizer), TEMPLATES["starcoder2"], prefix, suffix, 1024, repo).ids


def complete(model, tokenizer, prompt: list[int], max_new_tokens: int = 24) -> str:
    """Greedy suggestion through plain `generate`, with FIM/repo tokens suppressed as the server does."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
            bad_words_ids=[[i] for i in range(1, 7)], eos_token_id=0, pad_token_id=0,
        )
    return tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)


def test_is_a_small_starcoder2_checkpoint(model, tokenizer):
    from transformers import Starcoder2ForCausalLM

    assert isinstance(model, Starcoder2ForCausalLM)
    assert model.config.eos_token_id == 0 and model.config.bos_token_id == 0
    for token, expected_id in STARCODER2_SPECIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(token) == expected_id
    weights = MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size <= 50 * 1024 * 1024
    card = (REPO_ROOT / "training" / "MODEL_CARD.md").read_text()
    assert f"{sum(p.numel() for p in model.parameters()):,}" in card, "model card states another parameter count"


def test_closes_the_parenthesis_of_a_signature(model, tokenizer):
    prefix = (
        "class Session:\n"
        '    """A connection to the server that remembers cookies."""\n\n'
        "    def __init__(self"
    )
    suffix = "\n\n    def close(self):\n        self.adapter.close()\n"
    line = complete(model, tokenizer, fim_ids(tokenizer, prefix, suffix)).split("\n")[0]
    assert ")" in line and line.rstrip().endswith(":"), line


def test_import_names_a_module_from_the_repository_context(model, tokenizer):
    context = {
        "shapes/geometry.py": "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
        "shapes/palette.py": 'RED = "#ff0000"\n\n\ndef darker(color):\n    return color\n',
    }
    prefix = "from shapes."
    suffix = " import Point\n\n\ndef origin():\n    return Point(0, 0)\n"
    prompt = fim_ids(tokenizer, prefix, suffix, context, path="shapes/render.py")
    words = complete(model, tokenizer, prompt, 8).split()
    assert words and words[0] in {"geometry", "palette"}, words


def test_return_uses_the_parameters(model, tokenizer):
    prefix = "def scale(point, factor):\n    return "
    suffix = "\n\n\ndef main():\n    print(scale(2, 3))\n"
    line = complete(model, tokenizer, fim_ids(tokenizer, prefix, suffix)).split("\n")[0]
    assert "factor" in line or "point" in line, line


# ---------------------------------------------------------------- the real server path

def infill_complete(tmp_path: Path, code: str, *flags: str, marker: str = "|") -> dict:
    """Run `infill-ls complete FILE:LINE:COL --json` with the cursor at `marker`."""
    offset = code.index(marker)
    text = code.replace(marker, "", 1)
    line = text[:offset].count("\n") + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    source = tmp_path / "snippet.py"
    source.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "server"), HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-m", "infill_ls", "complete", f"{source}:{line}:{column}", "--context-tokens", "1024",
         "--device", "cpu", "--max-new-tokens", "24", "--json", *flags],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_server_uses_the_bundled_model_when_none_is_configured(tmp_path):
    result = infill_complete(tmp_path, "def scale(point, factor):\n    return |\n")
    assert Path(result["model"]).resolve() == MODEL_DIR.resolve(), result
    assert result["generatedTokens"] > 0 and 0 < result["promptTokens"] <= 1024, result


def test_server_path_with_model_flag_gives_a_clean_single_line(tmp_path):
    result = infill_complete(tmp_path, "def area(width, height):\n    return max(|, 0) * height\n", "--model", str(MODEL_DIR))
    suggestion = result["suggestion"] or ""
    assert result["singleLine"], result
    assert "\n" not in suggestion and not any(token in suggestion for token in STARCODER2_SPECIAL_IDS), result


def test_server_path_closes_the_signature(tmp_path):
    result = infill_complete(tmp_path, "class Session:\n    def __init__(self|\n\n    def close(self):\n        pass\n",
                             "--model", str(MODEL_DIR))
    assert result["suggestion"] and ")" in result["suggestion"].split("\n")[0], result
