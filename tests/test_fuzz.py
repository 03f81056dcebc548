"""Hostile LSP input: the server answers with JSON-RPC errors, never crashes, never writes non-LSP to stdout.

A hypothesis fuzzer feeds one real server (over stdio, raw frames) malformed
bodies, invalid UTF-8, JSON that is not a JSON-RPC message, requests with params of
the wrong shape for every method it serves, unknown methods, wrong Content-Length
headers and garbage header lines.  After every case a probe (``infill/status``)
must be answered, and every request carrying an id must get a response.  Huge
documents (10 MB, one 1 MB line) and deeply nested JSON have their own tests.

``INFILL_FUZZ_EXAMPLES`` sets the number of cases per kind; the total tried is
printed at the end (``pytest -s``) and written to ``.cache/fuzz-cases.json``.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import queue
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, server_command, server_env
from raw_lsp import RawLspProcess

EXAMPLES = int(os.environ.get("INFILL_FUZZ_EXAMPLES", "200"))
DOC = "file:///fuzz/a.py"
TEXT = "def f(x):\n    return x + 1\n"
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
# Ids JSON-RPC allows (string, integer) and ones it does not.
ids = st.integers(min_value=-(2**63), max_value=2**63) | st.text(max_size=10) | st.floats(allow_nan=False) | st.booleans()
REQUESTS = ["textDocument/inlineCompletion", "textDocument/completion", "infill/status", "initialize",
            "textDocument/hover", "workspace/executeCommand", "nonsense/method", "$/nonsense"]
NOTIFICATIONS = ["textDocument/didOpen", "textDocument/didChange", "textDocument/didClose", "textDocument/didSave",
                 "workspace/didChangeConfiguration", "$/cancelRequest", "$/setTrace", "initialized", "nonsense/notify"]
VALID_PARAMS = {
    "textDocument/inlineCompletion": {"textDocument": {"uri": DOC}, "position": {"line": 1, "character": 4},
                                      "context": {"triggerKind": 2}},
    "textDocument/completion": {"textDocument": {"uri": DOC}, "position": {"line": 1, "character": 4}},
    "textDocument/didChange": {"textDocument": {"uri": DOC, "version": 2},
                               "contentChanges": [{"range": {"start": {"line": 0, "character": 0},
                                                             "end": {"line": 0, "character": 3}}, "text": "def"}]},
    "workspace/didChangeConfiguration": {"settings": {"infill": {"maxNewTokens": 8}}},
}


def mutated(value, replacement, path: list[int]):
    """``value`` with the leaf (or subtree) that ``path`` picks replaced."""
    if not path or not isinstance(value, (dict, list)) or not value:
        return replacement
    keys = list(value) if isinstance(value, dict) else list(range(len(value)))
    key = keys[path[0] % len(keys)]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[key] = mutated(value[key], replacement, path[1:])
    return copy


class Fuzzer:
    """One server and the bookkeeping of what was sent and answered."""

    def __init__(self, tiny_model):
        self.process = RawLspProcess(server_command("--model", str(tiny_model)), server_env())
        self.process.initialize(options={"debounceMs": 0, "maxNewTokens": 4})
        self.process.notify("textDocument/didOpen", {"textDocument": {"uri": DOC, "languageId": "python", "version": 1, "text": TEXT}})
        self.probes = itertools.count()
        self.cases = 0
        self.error_codes: collections.Counter = collections.Counter()

    def probe(self, expect_ids=(), attempts: int = 1, timeout: float = 60) -> dict:
        """Send ``attempts`` status requests; wait until one is answered; return every response seen by id.

        Several probes are for cases that desynchronise the framing: the first ones may be
        swallowed as part of a broken frame.
        """
        names = [f"probe-{next(self.probes)}" for _ in range(attempts)]
        for name in names:
            self.process.request(name, "infill/status")
        seen: dict = {}
        end = time.monotonic() + timeout
        def answered() -> bool:
            return any(json.dumps(n) in seen for n in names) and all(json.dumps(i) in seen for i in expect_ids)

        while not answered():
            try:
                message = self.process.messages.get(timeout=max(end - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no answer to {list(expect_ids) or names} (alive: {self.process.process.poll() is None}); "
                                     f"stderr tail: {b''.join(self.process.stderr)[-3000:].decode(errors='replace')}")
            if "method" in message and "id" in message:  # a request from the server: answer it
                result = [None] * len(message["params"].get("items", [])) if message["method"] == "workspace/configuration" else None
                self.process.send({"jsonrpc": "2.0", "id": message["id"], "result": result})
            elif "method" not in message:
                seen[json.dumps(message.get("id"))] = message
        for msg_id in expect_ids:
            assert json.dumps(msg_id) in seen, f"request {msg_id!r} got no response"
        for message in seen.values():
            # An internal error means hostile input reached code that did not expect it.
            assert message.get("error", {}).get("code") != -32603, message
            if "error" in message:
                self.error_codes[message["error"]["code"]] += 1
        self.cases += 1
        assert self.process.process.poll() is None, "the server exited"
        return seen

    def close(self) -> None:
        assert self.process.close() == 0
        assert self.process.stdout_garbage == [], "the server wrote something that is not LSP to stdout"


@pytest.fixture(scope="module")
def fuzzer(tiny_model):
    fuzzer = Fuzzer(tiny_model)
    yield fuzzer
    fuzzer.close()
    summary = {"cases": fuzzer.cases, "errorCodes": dict(fuzzer.error_codes)}
    print(f"\nfuzz cases tried: {summary}")
    (REPO / ".cache").mkdir(exist_ok=True)
    (REPO / ".cache" / "fuzz-cases.json").write_text(json.dumps(summary))


@FUZZ
@given(body=st.binary(min_size=1, max_size=200))  # pygls skips a 0-length frame silently
def test_arbitrary_bytes_get_a_parse_error(fuzzer, body):
    fuzzer.process.send(body)
    seen = fuzzer.probe()
    try:
        json.loads(body)
    except ValueError:  # invalid UTF-8 is a ValueError too
        assert seen["null"]["error"]["code"] == -32700, seen


@FUZZ
@given(value=json_values)
def test_json_that_is_not_a_message_gets_an_invalid_request_error(fuzzer, value):
    fuzzer.process.send(json.dumps(value).encode())
    seen = fuzzer.probe()
    if not isinstance(value, dict):
        assert seen["null"]["error"]["code"] == -32600, seen


@FUZZ
@given(method=st.sampled_from(REQUESTS), msg_id=ids, params=json_values)
def test_requests_with_any_params_get_a_response(fuzzer, method, msg_id, params):
    fuzzer.process.request(msg_id, method, params)
    fuzzer.probe(expect_ids=[msg_id] if isinstance(msg_id, (str, int)) and not isinstance(msg_id, bool) else [])


@FUZZ
@given(method=st.sampled_from(sorted(VALID_PARAMS)), path=st.lists(st.integers(0, 10), max_size=5), leaf=json_values)
def test_valid_params_with_one_part_replaced(fuzzer, method, path, leaf):
    params = mutated(VALID_PARAMS[method], leaf, path)
    if method in REQUESTS:
        fuzzer.process.request("mutated", method, params)
        fuzzer.probe(expect_ids=["mutated"])
    else:
        fuzzer.process.notify(method, params)
        fuzzer.probe()
    # Put the document back as it was for the next case.
    fuzzer.process.notify("textDocument/didClose", {"textDocument": {"uri": DOC}})
    fuzzer.process.notify("textDocument/didOpen", {"textDocument": {"uri": DOC, "languageId": "python", "version": 1, "text": TEXT}})


@FUZZ
@given(method=st.sampled_from(NOTIFICATIONS), params=json_values)
def test_notifications_with_any_params(fuzzer, method, params):
    fuzzer.process.notify(method, params)
    fuzzer.probe()


@FUZZ
@given(error=st.integers(-200, 200).filter(lambda n: n != 0), params=st.text(max_size=50))
def test_wrong_content_length_loses_only_the_frames_around_it(fuzzer, error, params):
    # A client that counts characters instead of UTF-8 bytes sends a short length for
    # non-ASCII text; one that miscounts the other way swallows the start of the next frame.
    body = json.dumps({"jsonrpc": "2.0", "method": "nonsense/notify", "params": params}).encode()
    fuzzer.process.send_bytes(b"Content-Length: %d\r\n\r\n" % max(len(body) + error, 1) + body)
    fuzzer.probe(attempts=4)


@FUZZ
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=3))
def test_garbage_header_lines(fuzzer, lines):
    fuzzer.process.send_bytes(b"".join(line + b"\r\n" for line in lines))
    fuzzer.probe(attempts=3)


@FUZZ
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_frames_cut_anywhere_are_read_whole(fuzzer, cuts):
    """The server reads stdin in chunks of whatever has arrived: three requests sent in
    pieces cut at any byte (in a header, at the blank line, in a body; several frames in
    one piece) must each be answered."""
    names = [f"split-{next(fuzzer.probes)}" for _ in range(3)]
    data = b"".join(
        b"Content-Length: %d\r\n\r\n" % len(body) + body
        for body in (json.dumps({"jsonrpc": "2.0", "id": name, "method": "infill/status"}).encode() for name in names)
    )
    points = sorted({cut % len(data) for cut in cuts} - {0})
    for start, end in zip([0, *points], [*points, len(data)]):
        fuzzer.process.send_bytes(data[start:end])
        time.sleep(0.002)  # lets the server read this piece on its own
    fuzzer.probe(expect_ids=names)


def test_deeply_nested_json_gets_an_error(fuzzer):
    for depth in (1000, 100_000):
        fuzzer.process.send(b"[" * depth + b"]" * depth)
        assert fuzzer.probe()["null"]["error"]["code"] in (-32700, -32600)
        nested = {"jsonrpc": "2.0", "id": "deep", "method": "infill/status", "params": None}
        fuzzer.process.send(json.dumps(nested).encode()[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}")
        fuzzer.probe()


def test_huge_documents_are_served(fuzzer):
    big = "x = compute(a, b) + 1  # a line of code\n" * 256_000  # 10 MB
    one_line = "y" * 1_000_000
    for uri, text, position in [("file:///fuzz/big.py", big, {"line": 128_000, "character": 4}),
                                ("file:///fuzz/line.py", one_line, {"line": 0, "character": 500_000})]:
        fuzzer.process.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}})
        fuzzer.process.request(uri, "textDocument/inlineCompletion",
                               {"textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": 2}})
        assert "result" in fuzzer.probe(expect_ids=[uri], timeout=120)[json.dumps(uri)]
        fuzzer.process.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


def test_huge_content_length_is_refused_not_allocated(fuzzer):
    fuzzer.process.send_bytes(b"Content-Length: 99999999999999\r\n\r\n{}")
    fuzzer.probe(attempts=2)
