"""Length-prefixed framing used on every channel of the sandbox.

Three channels use it:
- trainer <-> worker manager: JSON payloads (both ends trusted);
- manager -> job: one ``marshal`` payload with the job (sent before any
  candidate code runs, read by trusted harness code);
- job -> manager: text records, written by harness code but forgeable by the
  candidate, so the manager parses them with :class:`FrameReader`, which never
  trusts a length beyond its cap.
"""

from __future__ import annotations

import os
import struct

HEADER = struct.Struct(">I")

# Captured at import: the job process calls pack/write_all after untrusted code
# has run, which may have replaced builtins or os functions by then.
_len, _memoryview, _os_write = len, memoryview, os.write


class ProtocolError(Exception):
    """A peer sent something that is not a well-formed frame."""


def pack(payload: bytes) -> bytes:
    return HEADER.pack(_len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    view = _memoryview(data)
    while view:
        n = _os_write(fd, view)
        view = view[n:]


def read_exact(fd: int, n: int) -> bytes:
    """Blocking read of exactly n bytes; b'' if the peer closed first."""
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return b""
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_len: int = 1 << 30) -> bytes | None:
    """Blocking read of one frame; None on a clean end of stream."""
    head = read_exact(fd, HEADER.size)
    if not head:
        return None
    (n,) = HEADER.unpack(head)
    if n > max_len:
        raise ProtocolError(f"frame of {n} bytes exceeds {max_len}")
    body = read_exact(fd, n)
    if len(body) != n:
        raise ProtocolError("stream ended inside a frame")
    return body


class FrameReader:
    """Incremental frame parser for untrusted bytes, with a total byte cap."""

    def __init__(self, max_total: int):
        self.buf = bytearray()
        self.total = 0
        self.max_total = max_total

    def feed(self, data: bytes) -> list[bytes]:
        self.total += len(data)
        if self.total > self.max_total:
            raise ProtocolError(f"more than {self.max_total} bytes of results")
        self.buf += data
        frames = []
        while len(self.buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self.buf)
            if n > self.max_total:
                raise ProtocolError("oversized result frame")
            if len(self.buf) < HEADER.size + n:
                break
            frames.append(bytes(self.buf[HEADER.size:HEADER.size + n]))
            del self.buf[:HEADER.size + n]
        return frames
