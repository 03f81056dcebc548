"""The remote engine: FIM prompts sent to an OpenAI-compatible ``/v1/completions`` server.

One GPU server running vLLM, llama.cpp's server, TGI or Ollama can serve a whole
team.  Everything else stays in each editor's infill-ls: context, token budget,
stop rules, post-processing, cancellation.  Only the finished prompt text goes over
the network, with the FIM special tokens written as text; the engines named above
tokenize special-token text in a completion prompt as the special tokens.

HTTP is the standard library's ``http.client``, used blocking on the scheduler's
worker thread: the tokens arrive as a server-sent-event stream read line by line,
and between two lines the request's cancel flag, deadline and stop rules are
checked.  Stopping early closes the connection, which is how these servers learn
that nobody wants the rest (they abort the generation and free the slot).  A
finished stream leaves its kept-alive connection for the next request.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http.client
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

from ..settings import Settings
from .base import Generation, GenerationRequest, ModelLoadError
from .local import ModelInfo, load_tokenizer

log = logging.getLogger(__name__)

# OpenAI's API takes at most 4 stop strings (TGI enforces it); the server also
# stops at its end-of-text token by itself, and every stop token is cut here too.
MAX_STOP_STRINGS = 4
# How long to stay away from a busy server that did not say (HTTP 429/503 without Retry-After).
DEFAULT_RETRY_AFTER_S = 2.0
# How often a request in flight checks its cancel flag and deadline while no token arrives.
WATCH_INTERVAL_S = 0.01


class RemoteError(RuntimeError):
    """The inference server could not answer; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Endpoint:
    """Where the OpenAI-compatible API lives, e.g. ``http://gpu-box:8000/v1``."""

    scheme: str
    host: str
    port: int
    base_path: str  # "/v1": completions are at base_path + "/completions"

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL such as http://gpu-box:8000/v1, got {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        # A bare host means the usual /v1 prefix of these servers.
        base_path = parts.path.rstrip("/") or "/v1"
        return cls(parts.scheme, parts.hostname, port, base_path)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.base_path}"

    @property
    def root_path(self) -> str:
        """The server root, where llama.cpp and vLLM serve ``/tokenize``."""
        return self.base_path[: -len("/v1")] if self.base_path.endswith("/v1") else self.base_path


def error_detail(body: bytes) -> str:
    """The human part of an error body (OpenAI, FastAPI, llama.cpp and TGI shapes)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:300]
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)[:300]
    return str(data)[:300]


def retry_after_seconds(value: str | None) -> float:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return DEFAULT_RETRY_AFTER_S
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S


@dataclass
class Exchange:
    """One request in flight: its connection, the response being read, the socket under both."""

    connection: http.client.HTTPConnection
    response: http.client.HTTPResponse
    sock: socket.socket


class HttpClient:
    """Blocking HTTP/1.1 to one server, keeping finished connections alive for reuse."""

    def __init__(self, endpoint: Endpoint, headers: dict[str, str], timeout_s: float):
        self.endpoint = endpoint
        self.headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json", **headers}
        self.timeout_s = timeout_s
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _new_connection(self, timeout_s: float) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.endpoint.scheme == "https" else http.client.HTTPConnection
        return kind(self.endpoint.host, self.endpoint.port, timeout=timeout_s)

    def send(self, method: str, path: str, body: dict | None = None, timeout_s: float | None = None) -> "Exchange":
        """Send a request; return once the status line and headers are in.

        The caller reads the body and hands the exchange back to ``release``.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        payload = json.dumps(body).encode() if body is not None else None
        with self._lock:
            reused = self._idle.pop() if self._idle else None
        if reused is not None:
            reused.timeout = timeout_s
            if reused.sock is not None:
                reused.sock.settimeout(timeout_s)
            try:
                return self._exchange(reused, method, path, payload)
            except TimeoutError:
                reused.close()
                raise
            except (OSError, http.client.HTTPException):
                # The server closed the kept-alive connection (it restarted, or timed
                # it out): a fresh connection tells a real failure from a stale one.
                reused.close()
        connection = self._new_connection(timeout_s)
        try:
            return self._exchange(connection, method, path, payload)
        except Exception:
            connection.close()
            raise

    def _exchange(self, connection, method: str, path: str, payload: bytes | None) -> "Exchange":
        connection.request(method, path, body=payload, headers=self.headers)
        # Kept before getresponse: the connection forgets its socket when the server says it will close.
        sock = connection.sock
        return Exchange(connection, connection.getresponse(), sock)

    def release(self, exchange: "Exchange") -> None:
        """Keep the connection for the next request if its response was read to the end, else close it."""
        if exchange.response.isclosed() and not exchange.response.will_close:
            with self._lock:
                self._idle.append(exchange.connection)
        else:
            exchange.response.close()
            exchange.connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def get_json(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any, http.client.HTTPResponse]:
        """A small JSON request: (status, decoded body or raw bytes, response)."""
        exchange = self.send(method, path, body)
        response = exchange.response
        try:
            raw = response.read()
        finally:
            self.release(exchange)
        try:
            return response.status, json.loads(raw), response
        except ValueError:
            return response.status, raw, response


class RemoteEngine:
    def __init__(self, settings: Settings, tokenizer, template, api_key: str | None):
        self.settings = settings
        self.endpoint = Endpoint.parse(settings.endpoint)
        self.tokenizer = tokenizer
        self.template = template
        self.api_key_env = settings.apiKeyEnv
        self.has_api_key = bool(api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = HttpClient(self.endpoint, headers, settings.requestTimeoutMs / 1000)
        self.model_name: str | None = settings.remoteModel or None
        # Stop strings, longest first so a token like "<fim_prefix>" wins over a shorter look-alike.
        self.stop_strings = sorted(
            [t for t in template.stop if t != tokenizer.tokenizer.eos_token], key=len, reverse=True
        )
        self._retry_at = 0.0
        self._busy_message = ""
        self.info = ModelInfo(
            name=self.model_name or "(the server's model)",
            device=self.endpoint.url,
            precision="remote",
            reason=f"openai backend at {self.endpoint.url}",
            parameters=0,
            template=template.name,
        )

    @classmethod
    def load(cls, settings: Settings, report=lambda message, percent: None) -> "RemoteEngine":
        """Load the tokenizer and ask the server which model it serves.

        An unreachable server is not a load failure: it may start later, and each
        request then says what is wrong.
        """
        try:
            Endpoint.parse(settings.endpoint)
        except ValueError as error:
            raise ModelLoadError(f"infill.endpoint: {error}") from error
        report("loading tokenizer", 20)
        tokenizer, template = load_tokenizer(settings)
        api_key = os.environ.get(settings.apiKeyEnv) if settings.apiKeyEnv else None
        engine = cls(settings, tokenizer, template, api_key)
        report(f"asking {engine.endpoint.url} for its models", 60)
        try:
            engine.resolve_model_name()
        except RemoteError as error:
            log.warning("%s", error)
            engine.info = dataclasses.replace(engine.info, reason=str(error))
        report("ready", 100)
        return engine

    # ----- talking to the server -----

    def path(self, suffix: str) -> str:
        return self.endpoint.base_path + suffix

    def served_models(self) -> list[str]:
        status, body, response = self.call_json("GET", self.path("/models"))
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise self.http_error(status, body if isinstance(body, bytes) else json.dumps(body).encode(), response)
        return [m["id"] for m in body["data"] if isinstance(m, dict) and "id" in m]

    def resolve_model_name(self) -> None:
        """Use the configured model name, or the server's only (first) model."""
        models = self.served_models()
        if self.model_name is None and models:
            self.model_name = models[0]
        elif self.model_name not in models:
            log.warning("model %r is not in the server's list %s", self.model_name, models)
        self.info = dataclasses.replace(self.info, name=self.model_name or "(the server's model)",
                                        reason=f"openai backend: {self.model_name} at {self.endpoint.url}")

    def call_json(self, method: str, path: str, body: dict | None = None):
        try:
            return self.http.get_json(method, path, body)
        except (OSError, http.client.HTTPException) as error:
            raise self.connection_error(error) from error

    def connection_error(self, error: Exception) -> RemoteError:
        where = self.endpoint.url
        if isinstance(error, ConnectionRefusedError):
            return RemoteError(f"cannot reach the inference server at {where}: connection refused (is it running?)")
        if isinstance(error, socket.gaierror):
            return RemoteError(f"cannot resolve the host of the inference server {where}: {error}")
        if isinstance(error, (socket.timeout, TimeoutError)):
            return RemoteError(f"no answer from the inference server at {where} within "
                               f"{self.settings.requestTimeoutMs} ms (infill.requestTimeoutMs)")
        if isinstance(error, (http.client.RemoteDisconnected, ConnectionResetError, http.client.IncompleteRead)):
            return RemoteError(f"the inference server at {where} closed the connection ({type(error).__name__})")
        return RemoteError(f"cannot talk to the inference server at {where}: {type(error).__name__}: {error}")

    def http_error(self, status: int, body: bytes, response) -> RemoteError:
        detail = error_detail(body)
        where = self.endpoint.url
        if status in (401, 403):
            if self.has_api_key:
                hint = f"check the key in the environment variable {self.api_key_env}"
            else:
                hint = f"put the key in the environment variable {self.api_key_env} (infill.apiKeyEnv) of the editor"
            return RemoteError(f"the inference server at {where} refused the request (HTTP {status}: {detail}); {hint}")
        if status == 404:
            if "model" in detail.lower():
                return RemoteError(f"the inference server at {where} does not serve the model {self.model_name!r} "
                                   f"(HTTP 404: {detail}); set infill.remoteModel to one it serves")
            return RemoteError(f"{where} has no OpenAI completions API (HTTP 404: {detail}); "
                               "infill.endpoint should be the base URL ending in /v1")
        if status in (429, 503):
            wait = retry_after_seconds(response.getheader("Retry-After"))
            self._retry_at = time.monotonic() + wait
            self._busy_message = (f"the inference server at {where} is busy (HTTP {status}: {detail}); "
                                  f"suggestions pause for {wait:.0f} s")
            return RemoteError(self._busy_message)
        return RemoteError(f"the inference server at {where} answered HTTP {status}: {detail}")

    # ----- generation -----

    def completion_body(self, prompt: str, max_new_tokens: int) -> dict:
        body = {
            "prompt": prompt,
            "max_tokens": max_new_tokens,
            "temperature": 0,
            "stream": True,
            "stop": self.stop_strings[:MAX_STOP_STRINGS],
            # vLLM drops special tokens from the text unless told not to; the stop
            # tokens must stay visible to be cut here.  Other servers ignore the key.
            "skip_special_tokens": False,
        }
        if self.model_name:
            body["model"] = self.model_name
        return body

    def generate(self, request: GenerationRequest) -> Generation:
        prompt_tokens = len(request.prompt_ids)
        if request.cancel.is_set():  # superseded while it waited for the worker
            return Generation(text="", token_ids=[], stop_reason="cancelled", prompt_tokens=prompt_tokens)
        if time.monotonic() < self._retry_at:
            raise RemoteError(self._busy_message)
        started = time.perf_counter()
        prompt = self.tokenizer.decode(request.prompt_ids)
        try:
            exchange = self.http.send(
                "POST", self.path("/completions"), self.completion_body(prompt, request.max_new_tokens),
                timeout_s=self._read_timeout(request.deadline),
            )
        except (OSError, http.client.HTTPException) as error:
            if request.deadline is not None and time.monotonic() >= request.deadline and isinstance(error, TimeoutError):
                return Generation(text="", token_ids=[], stop_reason="timeout", prompt_tokens=prompt_tokens)
            raise self.connection_error(error) from error
        first_chunk_at = None
        text, reason = "", "eos"
        finished = threading.Event()
        watcher = threading.Thread(target=self._interrupt_when_stopped, args=(exchange, request, finished), daemon=True)
        watcher.start()
        try:
            response = exchange.response
            if response.status != 200:
                raise self.http_error(response.status, response.read(), response)
            stream = self._stream(exchange, request)
            for chunk_text, finish_reason in stream:
                first_chunk_at = first_chunk_at or time.perf_counter()
                text += chunk_text
                cut, stop = self._stop(text, finish_reason, request)
                if cut is not None:
                    text = text[:cut]
                if stop is not None:
                    reason = stop
                    if cut is None and finish_reason is not None:
                        # The server finished by itself: read to the end so the connection is reused.
                        for _ in stream:
                            pass
                    break
            else:
                # The stream ended: the server's [DONE], or the watcher shut the socket.
                reason = self._interruption(request) or "eos"
        except (OSError, http.client.HTTPException) as error:
            raise self.connection_error(error) from error
        finally:
            finished.set()
            watcher.join()
            # Unless the response was read to its end, the connection is closed: that is
            # what aborts the generation on the server and frees its slot.
            self.http.release(exchange)
        done = time.perf_counter()
        first_chunk_at = first_chunk_at or done
        return Generation(
            text=text,
            token_ids=self.tokenizer.encode(text),
            stop_reason=reason,
            prompt_tokens=prompt_tokens,
            prefill_ms=(first_chunk_at - started) * 1000,
            decode_ms=(done - first_chunk_at) * 1000,
        )

    def _read_timeout(self, deadline: float | None) -> float:
        """Wait for the server no longer than requestTimeoutMs, nor past the request's deadline."""
        limit = self.settings.requestTimeoutMs / 1000
        if deadline is not None:
            limit = min(limit, deadline - time.monotonic())
        return max(limit, 0.001)

    @staticmethod
    def _interruption(request: GenerationRequest) -> str | None:
        """Why the request must end now regardless of the server ("cancelled", "timeout"), or None."""
        if request.cancel.is_set():
            return "cancelled"
        if request.deadline is not None and time.monotonic() >= request.deadline:
            return "timeout"
        return None

    def _interrupt_when_stopped(self, exchange: Exchange, request: GenerationRequest, finished: threading.Event):
        """Shut the socket once the request is cancelled or out of time, even while no token arrives.

        A server busy with a long prompt (or holding text back) may send nothing for a
        while; checking only between events would keep the slot busy until it does.
        """
        while not finished.wait(WATCH_INTERVAL_S):
            if self._interruption(request):
                try:
                    exchange.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return

    def _stop(self, text: str, finish_reason: str | None, request: GenerationRequest) -> tuple[int | None, str | None]:
        """Where to cut ``text`` and why generation ends now, or (None, None) to read on."""
        for token in self.stop_strings:
            at = text.find(token)
            if at >= 0:
                return at, "eos"
        if request.stop_rule is not None:
            cut = request.stop_rule(text)
            if cut is not None:
                return cut, "rule"
        if finish_reason is not None:
            return None, "length" if finish_reason == "length" else "eos"
        return None, self._interruption(request)

    def _stream(self, exchange: Exchange, request: GenerationRequest) -> Iterator[tuple[str, str | None]]:
        """(text, finish_reason) per server-sent event, until [DONE] or the request's interruption."""
        while True:
            exchange.sock.settimeout(self.settings.requestTimeoutMs / 1000)
            try:
                line = exchange.response.readline()
            except (OSError, http.client.HTTPException):
                if self._interruption(request):  # the watcher shut the socket
                    return
                raise
            if not line:
                if self._interruption(request):
                    return
                raise RemoteError(f"the inference server at {self.endpoint.url} ended the stream "
                                  "without finishing the completion")
            line = line.strip()
            # Blank lines separate events; ":" lines are keep-alive comments; event:/id: carry nothing here.
            if not line.startswith(b"data:"):
                continue
            data = line[len(b"data:"):].strip()
            if data == b"[DONE]":
                try:
                    exchange.response.read()  # the end of the chunked body, so the connection can be reused
                except (OSError, http.client.HTTPException):
                    pass  # then it is closed instead
                return
            yield self._parse_event(data)

    def _parse_event(self, data: bytes) -> tuple[str, str | None]:
        try:
            event = json.loads(data)
            if "error" in event:
                raise RemoteError(f"the inference server at {self.endpoint.url} failed: {error_detail(data)}")
            choice = event["choices"][0]
            return choice.get("text") or "", choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise RemoteError(f"the inference server at {self.endpoint.url} sent a malformed stream event: "
                              f"{data[:200].decode('utf-8', 'replace')!r}") from None

    def clear_prompt_cache(self) -> None:
        """The server keeps its own prompt cache (vLLM prefix caching, llama.cpp cache_prompt)."""

    def close(self) -> None:
        self.http.close()
