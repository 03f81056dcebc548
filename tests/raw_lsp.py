"""A raw JSON-RPC peer for feeding a server bytes that no well-behaved client would send."""

from __future__ import annotations

import json
import subprocess
import threading
import queue
from typing import Any


class RawLspProcess:
    def __init__(self, command: list[str], env: dict[str, str]):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.messages: queue.Queue = queue.Queue()
        self.stdout_garbage: list[bytes] = []  # anything on stdout that is not a framed message
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True).start()

    def _read_stdout(self) -> None:
        stream = self.process.stdout
        while True:
            headers = {}
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, sep, value = line.decode("latin-1").partition(":")
                if not sep:
                    self.stdout_garbage.append(line)
                    continue
                headers[name.strip().lower()] = value.strip()
            body = stream.read(int(headers.get("content-length", 0)))
            try:
                self.messages.put(json.loads(body))
            except ValueError:
                self.stdout_garbage.append(body)

    def send_bytes(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, message: dict[str, Any] | bytes) -> None:
        body = message if isinstance(message, bytes) else json.dumps(message).encode("utf-8")
        self.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def request(self, msg_id: Any, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def response(self, msg_id: Any, timeout: float = 60) -> dict[str, Any]:
        """The response to ``msg_id``, answering server requests (configuration, progress) on the way."""
        while True:
            message = self.messages.get(timeout=timeout)
            if message.get("id") == msg_id and "method" not in message:
                return message
            if "method" in message and "id" in message:  # a server->client request
                result = [None] * len(message["params"].get("items", [])) if message["method"] == "workspace/configuration" else None
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": result})

    def initialize(self, capabilities: dict | None = None, options: dict | None = None) -> dict[str, Any]:
        self.request("init", "initialize", {"processId": None, "rootUri": None, "capabilities": capabilities or {},
                                            "initializationOptions": options})
        result = self.response("init")
        self.notify("initialized", {})
        return result

    def close(self) -> int:
        try:
            self.request("bye", "shutdown")
            self.response("bye", timeout=30)
            self.notify("exit")
        except Exception:
            pass
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
