"""Talking to the workers: one JSON message per SOCK_SEQPACKET packet with file descriptors attached (SCM_RIGHTS),
and draining a cell's stdout/stderr pipes with a cap. Everything here runs on the pool's private loop."""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket


class Channel:
    """A non-blocking SOCK_SEQPACKET socket on the loop: one JSON message per packet, fds via SCM_RIGHTS."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop):
        self.sock, self.loop = sock, loop
        sock.setblocking(False)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.eof = False
        self.eof_event = asyncio.Event()
        loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while not self.eof:
            fds = array.array("i")
            try:
                data, anc, _f, _a = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * fds.itemsize))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, anc = b"", []
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            if not data:
                for fd in fds:
                    os.close(fd)
                self._set_eof()
                return
            try:
                msg = json.loads(data)
            except ValueError:
                msg = {"op": "garbage"}
            self.queue.put_nowait((msg, list(fds)))

    def _set_eof(self) -> None:
        if not self.eof:
            self.eof = True
            try:
                self.loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass
            self.eof_event.set()
            self.queue.put_nowait((None, []))

    def send(self, obj: dict, fds: tuple[int, ...] = ()) -> None:
        data = json.dumps(obj).encode()
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            self.sock.send(data)

    async def recv(self) -> tuple[dict | None, list[int]]:
        return await self.queue.get()

    def close(self) -> None:
        self._set_eof()
        while not self.queue.empty():
            _m, fds = self.queue.get_nowait()
            for fd in fds:
                os.close(fd)
        try:
            self.sock.close()
        except OSError:
            pass


def pipe() -> tuple[int, int]:
    """(read end non-blocking for the loop, write end blocking for the cell); both close-on-exec."""
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    os.set_blocking(w, True)
    return r, w


class Capture:
    """Drain one pipe on the loop, keeping the first `cap` bytes."""

    def __init__(self, fd: int, cap: int, loop: asyncio.AbstractEventLoop):
        self.fd, self.cap, self.loop = fd, cap, loop
        self.buf = bytearray()
        self.truncated = False
        self.eof = False
        loop.add_reader(fd, self.drain)

    def drain(self) -> None:
        while not self.eof:
            try:
                chunk = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                self.loop.remove_reader(self.fd)
                return
            room = self.cap - len(self.buf)
            if room > 0:
                self.buf += chunk[:room]
            if len(chunk) > max(room, 0):
                self.truncated = True

    def close(self) -> str:
        self.drain()
        if not self.eof:
            self.loop.remove_reader(self.fd)
        os.close(self.fd)
        return bytes(self.buf).decode("utf-8", errors="replace")
