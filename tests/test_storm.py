"""Storms: 1,000 inline-completion requests in rapid succession, with cancels and edits in between.

Every request must be answered (a result, or -32800 for the cancelled ones), the
last one must get a real suggestion, no generation may keep running for a request
that was cancelled or superseded, and the server's event loop must keep answering
other requests meanwhile.  The worst ``infill/status`` round trip seen during the
storm is printed (``pytest -s``) and written to ``.cache/storm.json`` rather than
asserted against 50 ms: a shared CI machine can stall any process for longer.
The assertion on it is a generous 2 s, which only a blocked event loop (a model
call on the loop, a synchronous tokenization of a huge prompt) would break.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from conftest import REPO, cancel_request, open_document, send_inline, server_command, server_env, server_status, start_client, stop_client, wait_until_loaded
from raw_lsp import RawLspProcess


STORM = 1000
# Long generations (up to 400 tokens, several lines) so that cancels and supersession
# land while the model is working, and no debounce so each request reaches the scheduler.
SETTINGS = {"debounceMs": 0, "maxNewTokens": 400, "contextTokens": 4096, "timeoutMs": 600000, "multiline": "always"}
CODE = "import os\n\ndef total(values):\n    result = sum(values) # done\n    return result\n"
URI = "file:///work/storm.py"


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def edit(version: int, character: int, text: str) -> types.DidChangeTextDocumentParams:
    at = types.Position(line=0, character=character)
    return types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=at, end=at), text=text)],
    )


async def measure_loop_latency(client, stop: asyncio.Event, samples: list[float]) -> None:
    """Round trips of infill/status every 10 ms until ``stop`` is set."""
    while not stop.is_set():
        started = time.perf_counter()
        await server_status(client)
        samples.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)


@pytest.mark.asyncio(loop_scope="module")
async def test_storm_of_requests_with_cancels_and_edits(tiny_model):
    lsp = await start_client("--model", str(tiny_model), initialization_options=SETTINGS)
    try:
        open_document(lsp, URI, CODE)
        assert (await wait_until_loaded(lsp))["state"] == "ready"
        before = (await server_status(lsp))["counters"]
        samples: list[float] = []
        stop = asyncio.Event()
        probe = asyncio.ensure_future(measure_loop_latency(lsp, stop, samples))

        requests, cancelled = [], set()
        line0 = len("import os")
        version = 1
        started = time.perf_counter()
        for number in range(STORM):
            if number % 5 == 0:  # typing: one character at the end of the first line
                version += 1
                lsp.text_document_did_change(edit(version, line0, "s"))
                line0 += 1
            msg_id, future = send_inline(lsp, URI, 4, 0)
            requests.append(future)
            if number % 3 == 0 and number != STORM - 1:  # the editor gives up on every third one
                cancel_request(lsp, msg_id)
                cancelled.add(number)
            await asyncio.sleep(0.001)
        sent_s = time.perf_counter() - started
        answers = await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 600)
        stop.set()
        await probe

        errors = [a for a in answers if isinstance(a, Exception)]
        assert all(isinstance(e, JsonRpcException) and e.code == -32800 for e in errors), errors[:3]
        # A cancel can arrive after its answer was sent, so cancelled ones may have results.
        assert {i for i, a in enumerate(answers) if isinstance(a, Exception)} <= cancelled
        assert len(answers[-1].items) == 1 and answers[-1].items[0].insert_text.strip()

        # Every request was accounted for by the scheduler, and nothing runs on afterwards.
        settled = (await server_status(lsp))["counters"]
        await asyncio.sleep(1.0)
        after = (await server_status(lsp))["counters"]
        assert after == settled, "a generation was still running after every request was answered"
        delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        # (How many generations ran to their own end depends on how fast the model ends
        # its text: the stop rules end the tiny model's quickly, before the next request
        # comes. That work stops once cancelled is tested in test_engine.py.)
        # Each request that was not cancelled was either superseded or ran a generation.
        assert sum(delta.values()) >= STORM - len(cancelled), delta

        report = {"requests": STORM, "cancelled": len(cancelled), "sendSeconds": round(sent_s, 2),
                  "statusRoundTrips": len(samples), "worstLoopLatencyMs": round(max(samples), 1),
                  "p99LoopLatencyMs": round(sorted(samples)[int(len(samples) * 0.99)], 1), "counters": delta}
        print(f"\nstorm: {json.dumps(report)}")
        (REPO / ".cache").mkdir(exist_ok=True)
        (REPO / ".cache" / "storm.json").write_text(json.dumps(report, indent=2))
        assert max(samples) < 2000, report
    finally:
        await stop_client(lsp)


def test_memory_stays_flat_over_many_edits(tiny_model):
    """10,000 didChange notifications must not grow the server (pygls leaked ~2 KB each)."""
    server = RawLspProcess(server_command("--model", str(tiny_model)), server_env())
    server.initialize()
    server.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1, "text": CODE}})

    def type_and_delete(count: int, version: int) -> int:
        for _ in range(count):
            version += 1
            at = {"line": 0, "character": 9}
            change = {"range": {"start": at, "end": at}, "text": "x"} if version % 2 else \
                {"range": {"start": at, "end": {"line": 0, "character": 10}}, "text": ""}
            server.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": version}, "contentChanges": [change]})
        server.request(version, "infill/status")
        server.response(version, timeout=120)
        return version

    try:
        while True:  # the model loads in the background: wait for its memory to be there
            server.request("status", "infill/status")
            if server.response("status", timeout=120)["result"]["state"] != "loading":
                break
            time.sleep(0.1)
        version = type_and_delete(2000, 1)  # warm-up: caches, allocator arenas
        before = rss_mb(server.process.pid)
        type_and_delete(10_000, version)
        growth = rss_mb(server.process.pid) - before
    finally:
        assert server.close() == 0
    # pygls kept ~2 KB per notification (20 MB here) before InfillProtocol forgot them.
    assert growth < 5, f"RSS grew {growth:.1f} MB over 10,000 edits"
