"""Reading LSP frames from stdin: one thread hop per chunk, and one broken frame costs that frame, not the session.

pygls' own stdin reader hands every ``readline`` and every body ``read`` to a thread
and back to the event loop: three hops per message (header line, blank line, body),
nine per keystroke (didChange, $/cancelRequest, inlineCompletion), each waiting for
the GIL while a generation runs.  ``FrameReader`` reads whatever stdin has in one
``os.read`` on a thread and serves lines and bodies from its buffer without hopping.

pygls reads header lines, takes a line that is exactly ``Content-Length: N\\r\\n``,
and then reads N bytes.  Two client mistakes broke that for good:

- a wrong Content-Length (a client counting characters instead of UTF-8 bytes):
  the rest of the body, which ends without a newline, is glued to the next
  frame's header line, so that header never matches, nor does any later one;
- a huge Content-Length: ``read(N)`` allocates N bytes at once and the server
  died of MemoryError.

So a header that starts in the middle of a line is handed to pygls as a line of its
own, and Content-Length headers above MAX_FRAME_BYTES are hidden (their frame is then
skipped as garbage until the next header).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from typing import BinaryIO

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 256 * 1024 * 1024
HEADER = b"Content-Length:"
CONTENT_LENGTH = re.compile(rb"Content-Length: *(\d+)")
CHUNK_BYTES = 1 << 20


class FrameReader:
    """The ``readline``/``readexactly`` pygls' message loop awaits, over a file descriptor."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False

    async def _fill(self) -> None:
        # Blocking read on a thread: stdin may be a pipe, a file or a terminal.
        chunk = await asyncio.get_running_loop().run_in_executor(None, os.read, self.fd, CHUNK_BYTES)
        if chunk:
            self.buffer += chunk
        else:
            self.eof = True

    async def readline(self) -> bytes:
        end = self.buffer.find(b"\n")
        while end < 0 and not self.eof:
            searched = len(self.buffer)
            await self._fill()
            end = self.buffer.find(b"\n", searched)
        end = len(self.buffer) if end < 0 else end + 1
        line = bytes(self.buffer[:end])
        del self.buffer[:end]
        start = line.find(HEADER, 1)
        if start > 0:
            log.warning("protocol error: %d bytes before a Content-Length header skipped", start)
            self.buffer[:0] = line[start:]
            line = line[:start]
        match = CONTENT_LENGTH.match(line)
        if match and int(match.group(1)) > MAX_FRAME_BYTES:
            log.warning("protocol error: refused a %s-byte frame (limit %d)", match.group(1).decode(), MAX_FRAME_BYTES)
            return b"X-Refused-" + line
        return line

    async def readexactly(self, size: int) -> bytes:
        while len(self.buffer) < size and not self.eof:
            await self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def serve_stdio(server, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """pygls' ``start_io`` with a ``FrameReader`` instead of its own stdin reader.

    This repeats what pygls 2.1's ``start_io`` does around its reader (including the
    private ``_stop_event`` that its ``shutdown`` sets); a pygls without ``run_async``
    gets its own ``start_io``: slower stdin, same protocol.
    """
    try:
        from pygls.io_ import StdoutWriter, run_async
    except ImportError:
        log.warning("this pygls has no io_.run_async; reading stdin with its own reader")
        server.start_io(stdin, stdout)
        return

    server._stop_event = threading.Event()
    server.protocol.set_writer(StdoutWriter(stdout))
    try:
        # pygls' logger, as its start_io passes (ours would log every frame's length at debug level).
        asyncio.run(run_async(stop_event=server._stop_event, reader=FrameReader(stdin.fileno()),
                              protocol=server.protocol, logger=logging.getLogger("pygls.server"),
                              error_handler=server.report_server_error))
    except BrokenPipeError:
        log.error("connection to the client lost; shutting down")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()
