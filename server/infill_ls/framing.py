"""Reading LSP frames from stdin so that one broken frame costs that frame, not the session.

pygls reads header lines, takes a line that is exactly ``Content-Length: N\\r\\n``,
and then reads N bytes.  Two client mistakes broke that for good:

- a wrong Content-Length (a client counting characters instead of UTF-8 bytes):
  the rest of the body, which ends without a newline, is glued to the next
  frame's header line, so that header never matches, nor does any later one;
- a huge Content-Length: ``read(N)`` allocates N bytes at once and the server
  died of MemoryError.

This wrapper hands pygls a header that starts in the middle of a line as a line of
its own, and hides Content-Length headers above MAX_FRAME_BYTES (their frame is
then skipped as garbage until the next header).
"""

from __future__ import annotations

import logging
import re
from typing import BinaryIO

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 256 * 1024 * 1024
HEADER = b"Content-Length:"
CONTENT_LENGTH = re.compile(rb"Content-Length: *(\d+)")


class ResyncingReader:
    """The ``readline``/``read`` of a binary stream, with frame headers put back on lines of their own."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.pending = b""

    def readline(self) -> bytes:
        line, self.pending = (self.pending or self.stream.readline()), b""
        start = line.find(HEADER, 1)
        if start > 0:
            log.warning("protocol error: %d bytes before a Content-Length header skipped", start)
            line, self.pending = line[:start], line[start:]
        match = CONTENT_LENGTH.match(line)
        if match and int(match.group(1)) > MAX_FRAME_BYTES:
            log.warning("protocol error: refused a %s-byte frame (limit %d)", match.group(1).decode(), MAX_FRAME_BYTES)
            return b"X-Refused-" + line
        return line

    def read(self, size: int) -> bytes:
        data, self.pending = self.pending[:size], self.pending[size:]
        if len(data) < size:
            data += self.stream.read(size - len(data))
        return data
