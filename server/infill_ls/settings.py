"""One typed settings object and the rules for merging and validating it.

Settings come from four places, later ones winning: defaults, command-line flags,
the client's ``initializationOptions`` and its ``workspace/configuration``
(section ``infill``).  The editor's live settings win because they are the user's
most recent intent.  ``None`` and ``""`` mean "not set" everywhere, so a client
that sends every key with empty defaults does not erase a ``--model`` flag.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUNDLED_MODEL_DIR = Path(__file__).parent / "models" / "infill-small"
FALLBACK_MODEL = "bigcode/starcoder2-3b"

# 8bit/4bit: bitsandbytes; int8wo/int4wo: weight-only (engine/quantize.py), fast under
# fast decoding; int8dyn: dynamic int8, for CPUs; fp8: float8 weights and activations on
# the tensor cores of Ada/Hopper GPUs.
QUANTIZATIONS = ("auto", "none", "8bit", "4bit", "int8wo", "int4wo", "int8dyn", "fp8")
MULTILINE_MODES = ("auto", "always", "never")
LOG_LEVELS = ("error", "warning", "info", "debug")
BACKENDS = ("local", "openai")


def default_model() -> str:
    """The bundled small model when it is installed, else StarCoder2-3B."""
    if (BUNDLED_MODEL_DIR / "config.json").exists():
        return str(BUNDLED_MODEL_DIR)
    return FALLBACK_MODEL


@dataclass(frozen=True)
class Settings:
    model: str = field(default_factory=default_model)
    quantization: str = "auto"
    device: str = "auto"
    maxNewTokens: int = 64
    contextTokens: int = 2048
    debounceMs: int = 30
    multiline: str = "auto"
    timeoutMs: int = 2000
    loadWaitMs: int = 30000
    enable: bool = True
    template: str = "auto"
    trustRemoteCode: bool = False
    logLevel: str = "info"
    # Where the model runs: "local" (in this process) or "openai" (an OpenAI-compatible
    # /v1/completions server: vLLM, llama.cpp, TGI, Ollama); see engine/remote.py.
    backend: str = "local"
    endpoint: str = "http://127.0.0.1:8000/v1"
    # The NAME of the environment variable holding the server's API key, never the key.
    apiKeyEnv: str = "INFILL_API_KEY"
    # The model name sent to the server; empty: the first model the server lists.
    remoteModel: str = ""
    requestTimeoutMs: int = 10000
    # Repository context (context.py): snippets of other files in the prompt.
    contextFiles: bool = True
    maxContextFiles: int = 5000
    contextExclude: tuple[str, ...] = ()
    promptLookup: bool = True  # speculative decoding with drafts copied from the prompt
    fastDecode: bool = True  # static KV cache + torch.compile on CUDA
    idleUnloadMinutes: float = 0  # free the model after this long without requests; 0 = never

    def merged(self, updates: dict[str, Any] | None) -> tuple["Settings", list[str]]:
        """Apply ``updates``; return the new settings and one message per rejected value.

        A rejected value keeps the previous one, so a typo never breaks a working setup.
        """
        if not updates:
            return self, []
        if not isinstance(updates, dict):
            return self, [f"infill settings must be an object, got {type(updates).__name__}"]
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        errors: list[str] = []
        for key, value in updates.items():
            if value is None or value == "":
                continue
            if key not in known:
                if key not in IGNORED_KEYS:
                    errors.append(f"unknown setting infill.{key}")
                continue
            problem = _validate(key, value)
            if problem:
                shown = "(not shown)" if key in SECRET_LOOKING_KEYS else repr(value)
                errors.append(f"invalid infill.{key} = {shown}: {problem}; keeping {getattr(self, key)!r}")
            else:
                changes[key] = tuple(value) if isinstance(value, list) else value
        merged = dataclasses.replace(self, **changes)
        problem = check_budget(merged)
        if problem:
            errors.append(problem + "; keeping the previous values")
            merged = dataclasses.replace(merged, maxNewTokens=self.maxNewTokens, contextTokens=self.contextTokens)
        return merged, errors


# Keys that clients send for themselves (VS Code's server.path/args) or that belong
# to features not handled here; accepted silently.
IGNORED_KEYS = {"server", "trace", "keymaps", "filetypes"}
# A rejected value of these may be a pasted secret: never echo it.
SECRET_LOOKING_KEYS = {"apiKeyEnv"}


def _validate(key: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``key``, or None when it is."""
    choices = {
        "quantization": QUANTIZATIONS,
        "multiline": MULTILINE_MODES,
        "logLevel": LOG_LEVELS,
        "backend": BACKENDS,
    }
    ranges = {
        "maxNewTokens": (1, 2048),
        "contextTokens": (64, 131072),
        "debounceMs": (0, 5000),
        "timeoutMs": (10, 600000),
        "loadWaitMs": (0, 3600000),
        "requestTimeoutMs": (100, 600000),
        "maxContextFiles": (0, 1000000),
    }
    if key in choices:
        return None if value in choices[key] else f"expected one of {', '.join(choices[key])}"
    if key in ranges:
        low, high = ranges[key]
        if isinstance(value, bool) or not isinstance(value, int):
            return "expected a whole number"
        return None if low <= value <= high else f"expected {low}..{high}"
    if key == "contextExclude":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        return None if ok else "expected a list of gitignore-style patterns"
    if key == "idleUnloadMinutes":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "expected a number of minutes"
        return None if 0 <= value <= 100000 else "expected 0 (never) or more"
    if key in ("enable", "trustRemoteCode", "contextFiles", "promptLookup", "fastDecode"):
        return None if isinstance(value, bool) else "expected true or false"
    if key == "device":
        if not isinstance(value, str):
            return "expected a string"
        if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
            return None
        return "expected auto, cpu, cuda or cuda:N"
    if key in ("model", "template", "remoteModel"):
        return None if isinstance(value, str) else "expected a string"
    if key == "endpoint":
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            return "expected an http:// or https:// URL such as http://gpu-box:8000/v1"
        return None
    if key == "apiKeyEnv":
        # A name, not a key: refusing anything else keeps a pasted key out of settings files and logs.
        if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            return None
        return "expected the name of an environment variable (letters, digits, _)"
    return None


def check_budget(settings: Settings) -> str | None:
    """A cross-field check: the prompt needs room beside the generated tokens."""
    if settings.contextTokens - settings.maxNewTokens < 32:
        return (
            f"infill.contextTokens ({settings.contextTokens}) must exceed "
            f"infill.maxNewTokens ({settings.maxNewTokens}) by at least 32"
        )
    return None
