"""The command line: complete, prompt, doctor, flags — run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import server_env
from reference import reference_suggestion

SOURCE = "def add(a, b):\n    return a + b  # sum\n\nprint(add(1, 2))\n"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infill_ls", *args], capture_output=True, text=True,
                          env=server_env(), timeout=300, check=check)


def test_complete_prints_the_models_suggestion(tmp_path, tiny_model):
    path = tmp_path / "add.py"
    path.write_text(SOURCE)
    out = run("complete", f"{path}:2:12", "--model", str(tiny_model), "--quantization", "none", "--json")
    report = json.loads(out.stdout)
    cursor = SOURCE.index("a + b")
    expected = reference_suggestion(tiny_model, SOURCE[:cursor], SOURCE[cursor:])
    assert report["suggestion"] == expected
    assert report["singleLine"] is True
    assert report["device"] == "cpu" and report["precision"] == "float32"
    assert set(report["timingsMs"]) >= {"load", "prompt", "model", "total"}
    plain = run("complete", f"{path}:2:12", "--model", str(tiny_model), "--quantization", "none")
    assert plain.stdout == expected + "\n"


def test_prompt_shows_the_exact_prompt_and_its_token_count(tmp_path, tiny_model):
    path = tmp_path / "add.py"
    path.write_text(SOURCE)
    report = json.loads(run("prompt", f"{path}:2:12", "--model", str(tiny_model), "--json").stdout)
    assert report["prompt"].startswith("<fim_prefix>def add(a, b):\n    return <fim_suffix>a + b")
    assert report["prompt"].endswith("<fim_middle>")
    assert report["tokens"] == len(report["ids"]) <= report["budget"]


def test_bad_locations_and_models_exit_with_a_clear_message(tmp_path, tiny_model):
    path = tmp_path / "add.py"
    path.write_text(SOURCE)
    for location, words in [(f"{path}:9:1", "no line 9"), (f"{path}:1:99", "no column 99"),
                            (f"{tmp_path}/missing.py:1:1", "cannot read"), ("add.py", "FILE:LINE:COL")]:
        result = run("complete", location, "--model", str(tiny_model), check=False)
        assert result.returncode != 0 and words in result.stderr, result.stderr
    result = run("complete", f"{path}:1:1", "--model", str(tmp_path / "nothing"), check=False)
    assert result.returncode != 0 and "does not exist" in result.stderr
    assert result.stdout == ""


def test_doctor_reports_device_and_choice(tiny_model):
    out = run("doctor", "--model", str(tiny_model)).stdout
    assert "torch" in out and "transformers" in out
    # auto picks bf16 or, for a model this small, float32 by the CPU's instructions
    # (test_hardware); none keeps float32.
    assert "-> cpu bf16 (bf16 matrix instructions" in out or "-> cpu float32 (no bf16 matrix instructions" in out
    assert "-> cpu float32" in run("doctor", "--model", str(tiny_model), "--quantization", "none").stdout
    fp8 = run("doctor", "--model", str(tiny_model), "--quantization", "fp8").stdout
    assert "-> cpu fp8 (fp8 requested on cpu: emulated there" in fp8
    assert "bigcode/starcoder2-3b" in out  # the recommendation
