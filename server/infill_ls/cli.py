"""The ``infill-ls`` command: serve, complete, prompt, doctor, eval."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import __version__
from .settings import BACKENDS, QUANTIZATIONS, MULTILINE_MODES, LOG_LEVELS, Settings

log = logging.getLogger("infill_ls")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and prompt (override defaults; editor settings override these)")
    group.add_argument("--model", help="Hugging Face model id or local model directory (default: the bundled small model)")
    group.add_argument("--quantization", choices=QUANTIZATIONS)
    group.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    group.add_argument("--max-new-tokens", type=int, dest="maxNewTokens")
    group.add_argument("--context-tokens", type=int, dest="contextTokens")
    group.add_argument("--multiline", choices=MULTILINE_MODES)
    group.add_argument("--template", help="FIM template: auto or a family name")
    group.add_argument("--timeout-ms", type=int, dest="timeoutMs")
    group.add_argument("--trust-remote-code", action="store_true", default=None, dest="trustRemoteCode",
                       help="allow model repositories to run their own Python code (off by default)")
    group.add_argument("--backend", choices=BACKENDS,
                       help="local: run the model here; openai: send prompts to an OpenAI-compatible server")
    group.add_argument("--endpoint", help="the server's base URL for --backend openai, e.g. http://gpu-box:8000/v1")
    group.add_argument("--workspace", type=Path, help="workspace folder (default: the current directory)")
    group.add_argument("--no-context-files", action="store_false", default=None, dest="contextFiles",
                       help="no snippets of other files in the prompt")
    group.add_argument("--max-context-files", type=int, dest="maxContextFiles",
                       help="most workspace files scanned for context (default 5000)")
    group.add_argument("--context-exclude", action="append", dest="contextExclude", metavar="PATTERN",
                       help="gitignore-style pattern of files never used as context (repeatable)")
    group.add_argument("--log-level", choices=LOG_LEVELS, dest="logLevel")
    group.add_argument("--log-file", type=Path, help="also write the log to this file")


def settings_from_args(args: argparse.Namespace) -> Settings:
    keys = ("model", "quantization", "device", "maxNewTokens", "contextTokens", "multiline", "template",
            "timeoutMs", "trustRemoteCode", "logLevel", "contextFiles", "maxContextFiles", "contextExclude",
            "backend", "endpoint")
    settings, errors = Settings().merged({k: getattr(args, k, None) for k in keys})
    if errors:
        sys.exit("infill-ls: " + "; ".join(errors))
    return settings


def setup_logging(settings: Settings, log_file: Path | None) -> None:
    # Logs go to stderr (and optionally a file), never stdout: stdout carries LSP.
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=logging.WARNING, handlers=handlers, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("infill_ls").setLevel(settings.logLevel.upper())
    for noisy in ("pygls", "transformers", "bitsandbytes", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def parse_location(text: str) -> tuple[Path, int, int]:
    """``FILE:LINE:COL`` (1-based, COL in characters) -> (path, line, column)."""
    try:
        file, line, column = text.rsplit(":", 2)
        line_number, column_number = int(line), int(column)
    except ValueError:
        sys.exit(f"infill-ls: expected FILE:LINE:COL (1-based), got {text!r}")
    if line_number < 1 or column_number < 1:
        sys.exit("infill-ls: LINE and COL are 1-based")
    return Path(file), line_number, column_number


def cursor_from_file(location: str):
    """Read the file and split it at the location; exits with a clear message when out of range."""
    from .postprocess import CursorContext

    path, line, column = parse_location(location)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        sys.exit(f"infill-ls: cannot read {path}: {error}")
    lines = text.splitlines(keepends=True) or [""]
    if line > len(lines) + (1 if text.endswith("\n") else 0):
        sys.exit(f"infill-ls: {path} has {len(lines)} lines, no line {line}")
    line_text = lines[line - 1].rstrip("\r\n") if line <= len(lines) else ""
    if column > len(line_text) + 1:
        sys.exit(f"infill-ls: line {line} of {path} has {len(line_text)} characters, no column {column}")
    offset = sum(len(x) for x in lines[: line - 1]) + column - 1
    return path, CursorContext(prefix=text[:offset], suffix=text[offset:], document=str(path))


def repo_context(args: argparse.Namespace, settings: Settings, path: Path, context):
    """The repository context of a file, as the server would gather it (waits for the scan)."""
    from .context import ContextProvider, inside

    folder = (args.workspace or Path.cwd()).resolve()
    if not inside(path.resolve(), folder):
        return None  # a file outside the workspace: the single-file prompt, no scan
    provider = ContextProvider.from_settings([folder], settings)
    try:
        return provider.gather_now(path, context)
    finally:
        provider.close()


def command_serve(args: argparse.Namespace, settings: Settings) -> None:
    from .server import build_server

    server = build_server(settings)
    if args.tcp:
        log.info("serving LSP on 127.0.0.1:%d (loopback only)", args.port)
        server.start_tcp("127.0.0.1", args.port)
        return
    # Keep the real stdout for LSP and point sys.stdout at stderr, so a stray print
    # (ours or a library's) can never corrupt the message stream.
    from .framing import serve_stdio

    lsp_out = sys.stdout.buffer
    sys.stdout = sys.stderr
    serve_stdio(server, sys.stdin.buffer, lsp_out)


def command_complete(args: argparse.Namespace, settings: Settings) -> None:
    from .completion import suggest
    from .engine import load_engine
    from .engine.base import ModelLoadError
    from .engine.remote import RemoteError
    from .templates import TemplateError

    path, context = cursor_from_file(args.location)
    started = time.perf_counter()
    try:
        engine = load_engine(settings)
        load_ms = (time.perf_counter() - started) * 1000
        result = suggest(engine, context, settings, repo=repo_context(args, settings, path, context))
    except (ModelLoadError, TemplateError, RemoteError) as error:
        sys.exit(f"infill-ls: {error}")
    if args.json:
        info = engine.info
        print(json.dumps({
            "suggestion": result.text,
            "singleLine": result.single_line,
            "replaceChars": result.replace_chars,
            "stopReason": result.generation.stop_reason,
            "promptTokens": len(result.prompt),
            "generatedTokens": len(result.generation.token_ids),
            "timingsMs": {"load": round(load_ms, 1), **{k: round(v, 2) for k, v in result.timings_ms.items()}},
            "model": info.name, "device": info.device, "precision": info.precision,
        }, indent=2))
    elif result.text is not None:
        print(result.text)


def command_prompt(args: argparse.Namespace, settings: Settings) -> None:
    from .completion import build_prompt
    from .engine.base import ModelLoadError
    from .engine.local import load_tokenizer
    from .templates import TemplateError

    path, context = cursor_from_file(args.location)
    try:
        tokenizer, template = load_tokenizer(settings)
    except (ModelLoadError, TemplateError) as error:
        sys.exit(f"infill-ls: {error}")

    from .prompt import prompt_summary

    repo = repo_context(args, settings, path, context)
    prompt = build_prompt(tokenizer, template, context, settings, repo)
    text = tokenizer.decode(prompt.ids)
    summary = prompt_summary(prompt, repo, settings.contextTokens - settings.maxNewTokens, template.name)
    if args.json:
        print(json.dumps({"prompt": text, "ids": prompt.ids, **summary}, indent=2))
        return
    print(text)
    snippets = summary.pop("snippets")
    print(f"--- {len(prompt)} tokens ({json.dumps(summary)})")
    for s in snippets:
        where = "in prompt" if s["inPrompt"] else "over budget"
        print(f"--- snippet {s['path']}:{s['startLine']} ({s['lines']} lines) score {s['score']:.3f} "
              f"from {s['source']}, {where}")


def command_doctor(args: argparse.Namespace, settings: Settings) -> None:
    from .doctor import report

    from .context import ContextProvider

    print(report(settings))
    # The repository context a server started here would see.
    provider = ContextProvider.from_settings([args.workspace or Path.cwd()], settings)
    provider.workspace.wait()
    print(f"workspace context: {json.dumps(provider.describe())}")
    provider.close()


def command_eval(args: argparse.Namespace, settings: Settings) -> None:
    from .evaluate import main as evaluate

    evaluate(args, settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="infill-ls", description=__doc__)
    parser.add_argument("--version", action="version", version=f"infill-ls {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="serve LSP over stdio (the default)")
    complete = commands.add_parser("complete", help="print the suggestion for FILE:LINE:COL")
    prompt = commands.add_parser("prompt", help="print the prompt for FILE:LINE:COL without running the model")
    doctor = commands.add_parser("doctor", help="versions, devices and what auto would choose")
    evaluation = commands.add_parser("eval", help="fill holes cut in real code; report exact match, similarity, latency")
    for sub in (serve, complete, prompt, doctor, evaluation):
        add_model_flags(sub)
    for sub in (complete, prompt):
        sub.add_argument("location", metavar="FILE:LINE:COL")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    for sub in (serve,):
        sub.add_argument("--tcp", action="store_true", help="serve on TCP 127.0.0.1 instead of stdio")
        sub.add_argument("--port", type=int, default=2087)
    from .evaluate import add_arguments as add_eval_arguments

    add_eval_arguments(evaluation)
    # `infill-ls --model X` means `infill-ls serve --model X`.
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in commands.choices and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "serve")
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    setup_logging(settings, args.log_file)
    handlers = {"serve": command_serve, "complete": command_complete, "prompt": command_prompt, "doctor": command_doctor,
                "eval": command_eval}
    handlers[args.command](args, settings)
