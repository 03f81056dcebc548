"""Typing replay on the CPU: the real server over LSP, driven like an editor.

    python bench/typing.py [--model DIR] [--chars 300] [--lines 5000] [--no-lookup] [--context-tokens 2048]
                           [--workspace DIR]

Opens a 5,000-line Python file, deletes a stretch of it and types it back at
30 ms per character (a 300 ms pause after each line and every few words), sending
``didChange`` per character and ``textDocument/inlineCompletion`` after each,
cancelling the superseded request the way VS Code does.  Reports keystroke-to-
suggestion p50/p95 (answered requests), the server's overhead outside the model
(context, prompt, post-processing, handler; from its debug timing log) p50/p95, the
share of generations started but thrown away, prompt-cache hits, and the server's
peak RSS.  Without ``--workspace`` the file is in no workspace folder (no repository
context); with it, the file is opened as ``DIR/typed_by_bench.py`` (never written to disk)
and the server scans DIR and puts snippets of its files in each prompt.
Writes bench/results/typing-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import sys
import sysconfig
import time
from pathlib import Path

from common import REPO, summary, write_result

CHAR_MS = 30
PAUSE_MS = 300
TIMINGS = re.compile(r"timings (\{.*\})")


def five_thousand_lines(count: int) -> str:
    """Real Python: stdlib modules concatenated until ``count`` lines."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    lines: list[str] = []
    for name in ("argparse.py", "textwrap.py", "dataclasses.py", "functools.py", "inspect.py", "typing.py"):
        lines += (stdlib / name).read_text(encoding="utf-8").splitlines()
        if len(lines) >= count:
            break
    return "\n".join(lines[:count]) + "\n"


class Client:
    """A minimal asyncio LSP client: requests with futures, server requests answered."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.pending: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(1)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        stream = self.process.stdout
        while True:
            headers = {}
            while True:
                line = await stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            message = json.loads(await stream.readexactly(int(headers["content-length"])))
            if "method" in message and "id" in message:  # configuration, progress creation
                count = len(message["params"].get("items", [])) if message["method"] == "workspace/configuration" else 0
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": [None] * count if count else None})
            elif "id" in message and message["id"] in self.pending:
                self.pending.pop(message["id"]).set_result((time.perf_counter(), message))

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def request(self, method: str, params) -> tuple[int, asyncio.Future]:
        msg_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = future
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id, future

    def notify(self, method: str, params) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})


def typing_script(text: str, start_line: int, chars: int) -> tuple[str, str, list[tuple[str, float]]]:
    """The document before typing, the text to type, and (char, pause after it in ms)."""
    lines = text.splitlines(keepends=True)
    before = "".join(lines[:start_line])
    typed, rest = "", "".join(lines[start_line:])
    typed = rest[:chars]
    words = 0
    steps = []
    for char in typed:
        pause = CHAR_MS
        if char == "\n":
            pause = PAUSE_MS
        elif char == " ":
            words += 1
            pause = PAUSE_MS if words % 3 == 0 else CHAR_MS
        steps.append((char, pause))
    return before + rest[chars:], before, steps


async def replay(model: str, lines: int, chars: int, settings: dict, workspace: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "server"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infill_ls", "serve", "--model", model,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    stderr_lines: list[str] = []

    async def collect_stderr() -> None:
        async for raw in process.stderr:
            stderr_lines.append(raw.decode("utf-8", "replace"))

    stderr_task = asyncio.ensure_future(collect_stderr())
    client = Client(process)
    capabilities = {"textDocument": {"inlineCompletion": {}, "synchronization": {}}, "window": {"workDoneProgress": True},
                    "workspace": {"configuration": True}}
    root_uri = workspace.resolve().as_uri() if workspace else None
    _, init = client.request("initialize", {"processId": os.getpid(), "rootUri": root_uri, "capabilities": capabilities,
                                            "initializationOptions": {**settings, "logLevel": "debug"}})
    await init
    client.notify("initialized", {})
    while True:  # wait for the model
        _, status = client.request("infill/status", None)
        state = (await status)[1]["result"]["state"]
        if state != "loading":
            break
        await asyncio.sleep(0.1)
    if state != "ready":
        raise SystemExit(f"model did not load: {state}\n{''.join(stderr_lines[-20:])}")

    text = five_thousand_lines(lines)
    document, before, steps = typing_script(text, lines // 2, chars)
    uri = f"{root_uri}/typed_by_bench.py" if root_uri else "file:///bench/typed.py"
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": document}})
    line, character = before.count("\n"), 0
    version = 1
    requests = []  # (sent time, future, line, character)
    previous: tuple[int, asyncio.Future] | None = None
    for char, pause in steps:
        started = time.perf_counter()
        version += 1
        position = {"line": line, "character": character}
        client.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"range": {"start": position, "end": position}, "text": char}],
        })
        if char == "\n":
            line, character = line + 1, 0
        else:
            character += len(char.encode("utf-16-le")) // 2
        if previous is not None and not previous[1].done():
            client.notify("$/cancelRequest", {"id": previous[0]})
        previous = client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 2},
        })
        requests.append((time.perf_counter(), previous[1], line, character))
        await asyncio.sleep(max(0.0, pause / 1000 - (time.perf_counter() - started)))
    await asyncio.gather(*(future for _, future, _, _ in requests))
    _, status = client.request("infill/status", None)
    counters = (await status)[1]["result"]["counters"]
    rss_kb = peak_rss_kb(process.pid)
    _, bye = client.request("shutdown", None)
    await bye
    client.notify("exit", None)
    await process.wait()
    await stderr_task

    timings = [json.loads(m.group(1)) for m in map(TIMINGS.search, stderr_lines) if m]
    finished = [t for t in timings if t["stop"] != "cancelled"]
    request_ms = {(t["line"], t["character"]): t["request_ms"] for t in finished}
    answered, outside, cancelled, with_text = [], [], 0, 0
    for sent, future, line, character in requests:
        received, message = future.result()
        if "error" in message:
            cancelled += 1
            continue
        answered.append((received - sent) * 1000)
        with_text += bool(message["result"]["items"])
        if (line, character) in request_ms:
            # What the server's own clock does not see: the request and the answer through
            # the pipes, parsed and written by pygls and by this client.
            outside.append(answered[-1] - request_ms[(line, character)])
    # On receipt the cursor context, the cache lookup and the open documents, then on the
    # worker everything but the model: snippets, syntax, prompt, post-processing,
    # bookkeeping; for every generation (a cancelled one skips only post-processing).
    # Parsing and writing the LSP messages (pygls) is not in it.
    overhead_of = lambda t: t["prepare_ms"] + t["request_ms"] - t["waited_ms"] - t["model_ms"]  # noqa: E731
    overhead = [overhead_of(t) for t in timings]
    generations = sum(counters.get(k, 0) for k in ("eos", "rule", "length", "cancelled", "timeout"))
    thrown = counters.get("cancelled", 0)
    hits = [t for t in timings if t["reused_tokens"] > 0]
    return {
        "requests": len(requests),
        "answered": len(answered),
        "answered_with_text": with_text,
        "cancelled_by_client": cancelled,
        "keystroke_to_suggestion_ms": summary(answered),
        "server_overhead_ms": summary(overhead),
        # Only generations that ran to their end (a cancelled one skips post-processing, so
        # the share of cancelled generations moves the figure above).
        "server_overhead_finished_ms": summary([overhead_of(t) for t in finished]),
        "model_ms": summary([t["model_ms"] for t in finished]),
        "outside_request_ms": summary(outside),
        "overhead_parts_ms": {part: summary([t[f"{part}_ms"] for t in timings]) for part in ("cursor", "prepare", "gather", "syntax", "prompt", "postprocess")},
        "prompt_tokens": summary([t["prompt_tokens"] for t in timings]),
        "snippet_tokens": summary([t.get("snippet_tokens", 0) for t in timings]),
        "generations_started": generations,
        "generations_thrown_away": thrown,
        "thrown_away_share": round(thrown / generations, 3) if generations else None,
        "superseded_before_model": counters.get("superseded", 0),
        "cache_hits": len(hits),
        "cache_hit_share": round(len(hits) / len(timings), 3) if timings else None,
        "reused_token_share": round(sum(t["reused_tokens"] for t in timings) / max(1, sum(t["prompt_tokens"] for t in timings)), 3),
        # Requests that prefilled more than half their prompt: on a big GPU model each costs a long prefill.
        "mostly_new_prompts": sum(t["reused_tokens"] * 2 < t["prompt_tokens"] for t in timings),
        "draft_tokens": sum(t["draft_tokens"] for t in timings),
        "accepted_draft_tokens": sum(t["accepted_draft_tokens"] for t in timings),
        "counters": counters,
        "samples": {"keystroke_to_suggestion_ms": [round(v, 2) for v in answered],
                    "server_overhead_ms": [round(v, 3) for v in overhead]},
        "server_peak_rss_mb": round(rss_kb / 1024, 1) if rss_kb else None,
    }


def peak_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the tiny test model)")
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--chars", type=int, default=300, help="characters typed")
    parser.add_argument("--no-lookup", action="store_true", help="promptLookup off")
    parser.add_argument("--no-fast-decode", action="store_true", help="fastDecode off (on a CPU: the dynamic cache)")
    parser.add_argument("--debounce", type=int, default=30, help="debounceMs")
    parser.add_argument("--context-tokens", type=int, default=2048, help="contextTokens")
    parser.add_argument("--workspace", type=Path, help="a workspace folder for repository context (e.g. the stdlib)")
    args = parser.parse_args()
    if args.model is None:
        from conftest import tiny_model_dir

        args.model = str(tiny_model_dir())
    settings = {"debounceMs": args.debounce, "promptLookup": not args.no_lookup, "contextTokens": args.context_tokens,
                "fastDecode": not args.no_fast_decode}
    result = asyncio.run(replay(args.model, args.lines, args.chars, settings, args.workspace))
    print(json.dumps(result, indent=2))
    print(write_result("typing", {"model": args.model, "lines": args.lines, "chars_typed": args.chars,
                                  "char_ms": CHAR_MS, "pause_ms": PAUSE_MS, "settings": settings,
                                  "workspace": str(args.workspace) if args.workspace else None, "results": result}))


if __name__ == "__main__":
    main()
