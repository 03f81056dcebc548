"""The openai backend against a real engine: llama.cpp's server (llama-cpp-python).

The tiny test model is converted to GGUF with llama.cpp's own converter and served
on a loopback port; infill-ls runs as a real LSP server over stdio and sends its
prompts there.  Expected answers come from the same engine asked directly (a plain
non-streaming /v1/completions request), so the tests check the whole remote path.

HTTP 429/503 and a malformed stream cannot be provoked from llama-cpp-python on
demand; those few cases use a small fault-injecting HTTP server instead.

Needs ``scripts/test-deps.d/40-llamacpp.sh`` (llama-cpp-python[server] and the
converter from its source distribution).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types

from conftest import REPO, cancel_request, inline, open_document, send_inline, server_status, start_client, stop_client, wait_until_loaded

# Async tests run in the module's event loop (asyncio_mode auto, loop scope module in
# pyproject), which the module-scoped LSP client fixture needs.
ALIAS = "tiny-starcoder2"
KEY_ENV = "INFILL_TEST_ENGINE_KEY"
API_KEY = "test-key-6f1c2a"  # the engine's key; tests check it never shows up in messages or logs
FAST = {"debounceMs": 0, "timeoutMs": 600000}
CODE = "import os\n\ndef total(values):\n    result = sum(values) # done\n    return result\n"


def llamacpp_source() -> Path:
    """llama.cpp's sources from the llama-cpp-python sdist that 40-llamacpp.sh unpacked."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="run scripts/test-deps.d/40-llamacpp.sh")
    cache = Path(os.environ.get("INFILL_LLAMACPP_CACHE", Path.home() / ".cache" / "infill-ls" / "llamacpp"))
    return cache / "src" / f"llama_cpp_python-{llama_cpp.__version__}" / "vendor" / "llama.cpp"


def convert_to_gguf(model_dir: Path, out: Path) -> None:
    """Run llama.cpp's convert_hf_to_gguf.py on the tiny model.

    The converter recognises a BPE pre-tokenizer by hashing the token ids of a test
    string, so only vocabularies it was told about pass.  The tiny model's tokenizer
    is byte-level BPE with GPT-2's pre-tokenizer, so it is declared as "gpt-2".
    (A real StarCoder2 checkpoint needs no such help: its hash is known as "starcoder".)
    """
    source = llamacpp_source()
    if not (source / "convert_hf_to_gguf.py").exists():
        pytest.fail(f"llama.cpp's converter is missing at {source}: run scripts/test-deps.d/40-llamacpp.sh")
    bootstrap = (
        "import runpy, sys\n"
        f"sys.path[:0] = [{str(source)!r}, {str(source / 'gguf-py')!r}]\n"
        "from conversion.starcoder import StarCoder2Model\n"
        "StarCoder2Model.get_vocab_base_pre = lambda self, tokenizer: 'gpt-2'\n"
        f"sys.argv[0] = {str(source / 'convert_hf_to_gguf.py')!r}\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    done = subprocess.run(
        [sys.executable, "-c", bootstrap, str(model_dir), "--outfile", str(tmp), "--outtype", "f32"],
        capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"convert_hf_to_gguf.py failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    tmp.rename(out)


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model) -> Path:
    converter_path = llamacpp_source() / "convert_hf_to_gguf.py"
    converter = converter_path.read_bytes() if converter_path.exists() else b""
    key = hashlib.sha256(str(tiny_model).encode() + converter).hexdigest()[:12]
    path = REPO / ".cache" / f"tiny-model-{key}.gguf"
    if not path.exists():
        convert_to_gguf(tiny_model, path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """llama.cpp's server (llama-cpp-python) on a loopback port; its output goes to a log file."""

    def __init__(self, gguf: Path, log_path: Path):
        self.gguf = gguf
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "4096", "--n_threads", "1",
            "--api_key", API_KEY,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        end = time.monotonic() + 180
        while time.monotonic() < end:
            if self.process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                request_json(self.port, "GET", "/v1/models")
                return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"llama_cpp.server did not answer within 180 s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def request_json(port: int, method: str, path: str, body: dict | None = None, key: str = API_KEY) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def raw_completion(engine: Engine, prefix: str, suffix: str, max_tokens: int) -> dict:
    """The engine's own answer for the StarCoder2 FIM prompt, asked directly and without streaming."""
    prompt = f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"
    body = {"model": ALIAS, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stop": ["<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"]}
    return request_json(engine.port, "POST", "/v1/completions", body)["choices"][0]


@pytest.fixture(scope="module")
def engine(tiny_gguf, tmp_path_factory):
    server = Engine(tiny_gguf, tmp_path_factory.mktemp("engine") / "llama-server.log")
    server.start()
    yield server
    server.stop()


def remote_options(engine: Engine, **extra) -> dict:
    return {**FAST, "backend": "openai", "endpoint": engine.endpoint, "apiKeyEnv": KEY_ENV, **extra}


async def start_remote_client(tiny_model, options: dict, key: str | None = API_KEY):
    """infill-ls with the openai backend; the tiny model's directory provides the tokenizer."""
    if key is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = key
    lsp = await start_client("--model", str(tiny_model), "--log-level", "debug", initialization_options=options)
    status = await wait_until_loaded(lsp)
    assert status["state"] == "ready", status
    return lsp


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def remote(engine, tiny_model):
    lsp = await start_remote_client(tiny_model, remote_options(engine, remoteModel=ALIAS))
    yield lsp
    await stop_client(lsp)


async def counter(lsp, name: str) -> int:
    return (await server_status(lsp))["counters"].get(name, 0)


def errors(lsp) -> list[str]:
    return [m.message for m in lsp.messages if m.type == types.MessageType.Error]


async def wait_for(condition, timeout: float = 60, what: str = "condition", engine: Engine | None = None):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            log = f"; the engine's log ends with:\n{engine.log()[-3000:]}" if engine else ""
            pytest.fail(f"timed out waiting for {what}{log}")
        await asyncio.sleep(0.05)


# ----- answers -----


async def test_single_line_suggestion_equals_the_engines_own_output(remote, engine):
    uri = "file:///remote/single.py"
    open_document(remote, uri, CODE)
    offset = CODE.index("sum(values)")
    result = await inline(remote, uri, 3, len("    result = "))
    raw = raw_completion(engine, CODE[:offset], CODE[offset:], 64)["text"]
    expected = raw.split("\n")[0].rstrip()
    assert [i.insert_text for i in result.items] == ([expected] if expected else [])


async def test_multi_line_suggestion_equals_the_engines_own_output(remote, engine):
    uri = "file:///remote/multi.py"
    text = "def f(x):\n    \n"
    open_document(remote, uri, text)
    result = await inline(remote, uri, 1, 4)
    raw = raw_completion(engine, text[: len("def f(x):\n    ")], "\n", 64)["text"]
    expected = "\n".join(line.rstrip() for line in raw.rstrip("\ufffd").split("\n")).rstrip()
    assert [i.insert_text for i in result.items] == ([expected] if expected.strip() else [])
    status = await server_status(remote)
    assert status["state"] == "ready" and status["precision"] == "remote"
    assert status["device"] == engine.endpoint


def find_long_single_line_case(engine: Engine) -> tuple[str, str, str]:
    """A cursor whose raw completion has a first line and keeps going after it (so a cut saves work)."""
    # Code right of the cursor makes the suggestion single-line (multiline "auto").
    for prefix, suffix in (("def f(x):\n    return ", " x\n"), ("import ", " sys\n"), ("y = f(", "x) + 2\n")):
        choice = raw_completion(engine, prefix, suffix, 64)
        first_newline = choice["text"].find("\n")
        if 0 < first_newline < len(choice["text"]) - 20 and choice["finish_reason"] == "length":
            return prefix, suffix, choice["text"]
    pytest.fail("no prompt found whose raw completion runs past its first line")


async def test_streaming_stops_the_engine_at_the_end_of_the_line(remote, engine):
    prefix, suffix, raw = find_long_single_line_case(engine)
    uri = "file:///remote/stream.py"
    open_document(remote, uri, prefix + suffix)
    disconnects = engine.log().count("Disconnected from client")
    before = await counter(remote, "rule")
    line = prefix.count("\n")
    result = await inline(remote, uri, line, len(prefix.split("\n")[-1]))
    expected = raw.split("\n")[0].rstrip()
    assert [i.insert_text for i in result.items] == ([expected] if expected else [])
    assert await counter(remote, "rule") == before + 1
    # The stream was closed at the newline: the engine saw the client leave instead
    # of generating the 64 tokens it was asked for.
    await wait_for(lambda: engine.log().count("Disconnected from client") > disconnects, what="the engine's disconnect log", engine=engine)


async def test_cancelling_the_lsp_request_aborts_the_engines_generation(engine, tiny_model):
    text = "def f(x):\n    \n"
    choice = raw_completion(engine, "def f(x):\n    ", "\n", 300)
    assert choice["finish_reason"] == "length"  # left alone, the engine runs all 300 tokens
    lsp = await start_remote_client(tiny_model, remote_options(engine, maxNewTokens=300, multiline="always"))
    try:
        uri = "file:///remote/cancel.py"
        open_document(lsp, uri, text)
        log_before = engine.log()
        started, disconnects = log_before.count("POST /v1/completions"), log_before.count("Disconnected from client")
        msg_id, future = send_inline(lsp, uri, 1, 4)
        # uvicorn logs the request when the stream starts: the engine is generating now.
        await wait_for(lambda: engine.log().count("POST /v1/completions") > started, what="the engine to start", engine=engine)
        cancel_request(lsp, msg_id)
        with pytest.raises(Exception, match="(?i)cancel"):  # pygls answers error -32800
            await asyncio.wait_for(future, 60)
        # llama-cpp-python notices the closed connection when its generator next yields;
        # with this random model it holds text back (broken UTF-8), so allow for that.
        await wait_for(lambda: engine.log().count("Disconnected from client") > disconnects, timeout=180,
                       what="the engine's disconnect log", engine=engine)
        for _ in range(200):  # the worker counts the generation once it has returned
            if await counter(lsp, "cancelled") == 1:
                break
            await asyncio.sleep(0.05)
        assert await counter(lsp, "cancelled") == 1
    finally:
        await stop_client(lsp)


# ----- failures -----


async def test_engine_down_then_restarted(engine, tiny_model):
    lsp = await start_remote_client(tiny_model, remote_options(engine))
    try:
        uri = "file:///remote/down.py"
        open_document(lsp, uri, CODE)
        first = await inline(lsp, uri, 3, len("    result = "))
        engine.stop()
        for _ in range(3):  # several keystrokes while the engine is down: one message
            assert not (await inline(lsp, uri, 3, len("    result = "))).items
        messages = [m for m in errors(lsp) if "connection refused" in m or "closed the connection" in m]
        assert len(messages) == 1, errors(lsp)
        status = await server_status(lsp)
        assert status["state"] == "error" and engine.endpoint in status["message"]
        engine.start()  # same port: the kept-alive connection is stale, a new one must be made
        again = await inline(lsp, uri, 3, len("    result = "))
        assert [i.insert_text for i in again.items] == [i.insert_text for i in first.items]
        status = await server_status(lsp)
        assert status["state"] == "ready" and status["message"] is None
    finally:
        if engine.process.poll() is not None:
            engine.start()
        await stop_client(lsp)


async def test_wrong_api_key_is_reported_without_the_key(engine, tiny_model):
    wrong = "wrong-key-93be"
    lsp = await start_remote_client(tiny_model, remote_options(engine), key=wrong)
    try:
        uri = "file:///remote/key.py"
        open_document(lsp, uri, CODE)
        assert not (await inline(lsp, uri, 3, 5)).items
        assert not (await inline(lsp, uri, 3, 6)).items
        messages = [m for m in errors(lsp) if "HTTP 401" in m]
        assert len(messages) == 1 and KEY_ENV in messages[0], errors(lsp)
        everything = json.dumps([m.message for m in lsp.messages]) + json.dumps(await server_status(lsp))
        assert wrong not in everything and API_KEY not in everything
    finally:
        await stop_client(lsp)


async def test_endpoint_without_the_api_is_reported(engine, tiny_model):
    lsp = await start_remote_client(tiny_model, remote_options(engine, endpoint=f"http://127.0.0.1:{engine.port}/nothing/v1"))
    try:
        uri = "file:///remote/404.py"
        open_document(lsp, uri, CODE)
        assert not (await inline(lsp, uri, 3, 5)).items
        assert any("HTTP 404" in m and "/v1" in m for m in errors(lsp)), errors(lsp)
    finally:
        await stop_client(lsp)


# ----- failures llama-cpp-python cannot be made to produce: a fault-injecting server -----


class FaultServer:
    """Answers /v1/completions with a scripted status, headers and body; counts requests."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]):
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer(200, json.dumps({"data": [{"id": "faulty"}]}).encode(), {})

            def do_POST(self):
                owner.requests += 1
                self.rfile.read(int(self.headers["Content-Length"]))
                self._answer(status, body, headers)

            def _answer(self, code, payload, extra):
                self.send_response(code)
                for name, value in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def remote_engine(tiny_model, endpoint: str):
    from infill_ls.engine.remote import RemoteEngine
    from infill_ls.settings import Settings

    settings, problems = Settings().merged({"model": str(tiny_model), "backend": "openai", "endpoint": endpoint})
    assert not problems
    return RemoteEngine.load(settings)


def generation_request():
    from infill_ls.engine.base import GenerationRequest

    return GenerationRequest(prompt_ids=[1, 50, 51, 3, 2], max_new_tokens=8)


def test_busy_server_is_left_alone_for_its_retry_after(tiny_model):
    from infill_ls.engine.remote import RemoteError

    server = FaultServer(503, b'{"error": {"message": "overloaded"}}', {"Retry-After": "30"})
    try:
        engine = remote_engine(tiny_model, server.endpoint)
        with pytest.raises(RemoteError, match=r"busy \(HTTP 503: overloaded\).*30 s"):
            engine.generate(generation_request())
        with pytest.raises(RemoteError, match="busy"):
            engine.generate(generation_request())
        assert server.requests == 1  # the second request did not reach the server
    finally:
        server.close()


def test_too_many_requests_without_retry_after(tiny_model):
    from infill_ls.engine.remote import DEFAULT_RETRY_AFTER_S, RemoteError

    server = FaultServer(429, b"slow down", {})
    try:
        engine = remote_engine(tiny_model, server.endpoint)
        with pytest.raises(RemoteError, match=rf"HTTP 429: slow down.*{DEFAULT_RETRY_AFTER_S:.0f} s"):
            engine.generate(generation_request())
    finally:
        server.close()


def test_malformed_stream_is_reported(tiny_model):
    from infill_ls.engine.remote import RemoteError

    server = FaultServer(200, b'data: {"choices": [{"text": "ok"}]}\n\ndata: {not json\n\n', {"Content-Type": "text/event-stream"})
    try:
        engine = remote_engine(tiny_model, server.endpoint)
        with pytest.raises(RemoteError, match="malformed stream event"):
            engine.generate(generation_request())
    finally:
        server.close()


# ----- settings -----


def test_remote_settings_are_validated():
    from infill_ls.settings import Settings

    settings, problems = Settings().merged({"backend": "openai", "endpoint": "https://gpu-box/v1", "remoteModel": "m",
                                            "apiKeyEnv": "TEAM_KEY", "requestTimeoutMs": 5000})
    assert not problems
    assert (settings.backend, settings.endpoint, settings.apiKeyEnv) == ("openai", "https://gpu-box/v1", "TEAM_KEY")
    kept, problems = settings.merged({"backend": "cloud", "endpoint": "gpu-box:8000", "requestTimeoutMs": 5})
    assert len(problems) == 3 and (kept.backend, kept.endpoint, kept.requestTimeoutMs) == ("openai", "https://gpu-box/v1", 5000)


def test_a_key_pasted_as_apikeyenv_is_refused_and_not_echoed():
    from infill_ls.settings import Settings

    pasted = "sk-live-1234abcd/=="
    settings, problems = Settings().merged({"apiKeyEnv": pasted})
    assert settings.apiKeyEnv == "INFILL_API_KEY"
    assert len(problems) == 1 and "environment variable" in problems[0] and pasted not in problems[0]
