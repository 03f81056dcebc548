"""Soak: 10,000 inline-completion requests against one server; does its memory stay put?

Requests come in bursts of 20 (each superseding the one before, as fast typing
does), with an edit before every request and a document opened and closed every
25 bursts; the last request of each burst runs a real generation.  The server's
resident memory is read from /proc after a warm-up and then every 1,000 requests.

    python bench/soak.py [--requests N] [--model DIR]   # prints JSON

Without --model it builds (or reuses) the tiny test model in .cache/.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import server_command, server_env, tiny_model_dir  # noqa: E402
from raw_lsp import RawLspProcess  # noqa: E402

BURST = 20
TEXT = "import os\n\ndef total(values):\n    result = sum(values) # done\n    return result\n"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Soak:
    def __init__(self, model: Path):
        self.server = RawLspProcess(server_command("--model", str(model)), server_env())
        self.server.initialize(options={"debounceMs": 0, "maxNewTokens": 16, "timeoutMs": 600000})
        self.ids = itertools.count()
        self.documents = itertools.count()
        self.version = 1
        self.uri = self.open_document()

    def open_document(self) -> str:
        uri = f"file:///soak/doc{next(self.documents)}.py"
        self.server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": TEXT}})
        return uri

    def change(self, text: str, start: int, end: int) -> None:
        """Replace characters start..end of line 0 (an edit of one keystroke)."""
        self.version += 1
        span = {"start": {"line": 0, "character": start}, "end": {"line": 0, "character": end}}
        self.server.notify("textDocument/didChange", {"textDocument": {"uri": self.uri, "version": self.version},
                                                      "contentChanges": [{"range": span, "text": text}]})

    def burst(self, number: int) -> None:
        sent = []
        for i in range(BURST):
            # Type a character, then delete it: the document ends each burst as it began.
            self.change("x", 9, 9) if i % 2 == 0 else self.change("", 9, 10)
            msg_id = next(self.ids)
            self.server.request(msg_id, "textDocument/inlineCompletion", {
                "textDocument": {"uri": self.uri}, "position": {"line": 3, "character": 13}, "context": {"triggerKind": 2}})
            sent.append(msg_id)
        for msg_id in sent:
            response = self.server.response(msg_id, timeout=120)
            if "error" in response:
                raise RuntimeError(f"request {msg_id}: {response['error']}")
        if number % 25 == 24:  # editors open and close files all day
            self.server.notify("textDocument/didClose", {"textDocument": {"uri": self.uri}})
            self.uri, self.version = self.open_document(), 1

    def status(self) -> dict:
        self.server.request("status", "infill/status")
        return self.server.response("status")["result"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()
    soak = Soak(args.model or tiny_model_dir())
    pid = soak.server.process.pid
    for number in range(args.warmup // BURST):
        soak.burst(number)
    before = rss_mb(pid)
    counters_before = soak.status()["counters"]
    samples = []
    started = time.perf_counter()
    for number in range(args.requests // BURST):
        soak.burst(number)
        if (number + 1) * BURST % 1000 == 0:
            samples.append(round(rss_mb(pid), 1))
    seconds = time.perf_counter() - started
    after = rss_mb(pid)
    counters = {k: v - counters_before.get(k, 0) for k, v in soak.status()["counters"].items()}
    exit_code = soak.server.close()
    print(json.dumps({
        "requests": args.requests, "warmupRequests": args.warmup, "seconds": round(seconds, 1),
        "rssBeforeMB": round(before, 1), "rssAfterMB": round(after, 1), "rssGrowthMB": round(after - before, 1),
        "rssEvery1000MB": samples, "counters": counters, "serverExitCode": exit_code,
        "stdoutGarbage": len(soak.server.stdout_garbage),
    }, indent=2))


if __name__ == "__main__":
    main()
