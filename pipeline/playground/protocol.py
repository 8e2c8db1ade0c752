"""The wire between the dashboard's background jobs and the model worker: JSON messages over a Unix socket.

Each message is a 4-byte big-endian length and that many bytes of UTF-8 JSON (no pickle: neither side runs
code the other sends). A connection starts with a mutual HMAC-SHA256 challenge on the random key in the
playground folder (what ``multiprocessing.connection``'s ``authkey`` did): the worker sends a challenge, the
client answers it and sends its own, the worker answers that. Messages before the handshake are at most
:data:`HANDSHAKE_BYTES` long; any message at most :data:`MAX_MESSAGE_BYTES`.

Standard library only (no numpy, no torch): the client, the worker and the tests share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import select
import socket
import struct
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

#: Largest message accepted (bytes of JSON).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Largest message accepted before the handshake is done.
HANDSHAKE_BYTES = 1024
#: Seconds either side waits for the other during the handshake.
HANDSHAKE_TIMEOUT_S = 10.0
_HEADER = struct.Struct(">I")


class ProtocolError(OSError):
    """A malformed or oversized message, or a failed handshake."""


def playground_dir() -> Path:
    """Folder of the worker's socket key, log and result files: ``$ATTNVIZ_PLAYGROUND_DIR`` or a per-user
    folder in the temp directory."""
    env = os.environ.get("ATTNVIZ_PLAYGROUND_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"attnviz-playground-{os.getuid()}"


def socket_path(folder: str | os.PathLike) -> str:
    """The worker's Unix socket for ``folder`` (a short path in the temp directory: socket paths are limited to
    about 100 bytes)."""
    digest = hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"attnviz-pg-{digest}.sock")


def authkey(folder: Path) -> bytes:
    """The random key of ``folder``'s worker (written by the client that starts it, mode 0600)."""
    return (folder / "authkey").read_bytes()


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (the test process started the launcher) counts as gone.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"
    return True


class Connection:
    """One end of a connection: ``send`` / ``recv`` JSON values, ``poll`` for readability."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.limit = HANDSHAKE_BYTES

    def send(self, value: Any) -> None:
        """Send one JSON value (OSError when the other end is gone)."""
        body = json.dumps(value, ensure_ascii=False).encode("utf-8")
        if len(body) > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message of {len(body)} bytes is over the limit")
        self.sock.sendall(_HEADER.pack(len(body)) + body)

    def _read(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = self.sock.recv(min(left, 1 << 20))
            if not chunk:
                raise EOFError("the other end closed the connection")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> Any:
        """Receive one JSON value (EOFError when the other end closed, ProtocolError when it is malformed)."""
        (n,) = _HEADER.unpack(self._read(_HEADER.size))
        if n > self.limit:
            raise ProtocolError(f"message of {n} bytes is over the limit")
        try:
            return json.loads(self._read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ProtocolError("a message is not JSON") from None

    def poll(self, timeout: float = 0.0) -> bool:
        """True when a message (or the other end's close) can be read within ``timeout`` seconds."""
        readable, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        return bool(readable)

    def close(self) -> None:
        """Close this end."""
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- handshake ---------------------------------------------------------------------------------------------

    def _expect(self, key: str) -> str:
        message = self.recv()
        if not isinstance(message, dict) or not isinstance(message.get(key), str):
            raise ProtocolError("the handshake failed")
        return message[key]

    def accept_handshake(self, key: bytes) -> None:
        """Worker side: require the client to prove it holds ``key``, then prove it too."""
        self.sock.settimeout(HANDSHAKE_TIMEOUT_S)
        challenge = os.urandom(32).hex()
        self.send({"challenge": challenge})
        message = self.recv()
        if not (isinstance(message, dict) and isinstance(message.get("digest"), str)
                and isinstance(message.get("challenge"), str) and len(message["challenge"]) == 64
                and hmac.compare_digest(message["digest"], _digest(key, challenge))):
            raise ProtocolError("the client failed the handshake")
        self.send({"digest": _digest(key, message["challenge"])})
        self.sock.settimeout(None)
        self.limit = MAX_MESSAGE_BYTES

    def offer_handshake(self, key: bytes) -> None:
        """Client side: answer the worker's challenge, and require it to answer ours."""
        self.sock.settimeout(HANDSHAKE_TIMEOUT_S)
        challenge = os.urandom(32).hex()
        self.send({"digest": _digest(key, self._expect("challenge")), "challenge": challenge})
        if not hmac.compare_digest(self._expect("digest"), _digest(key, challenge)):
            raise ProtocolError("the worker failed the handshake")
        self.sock.settimeout(None)
        self.limit = MAX_MESSAGE_BYTES


def _digest(key: bytes, challenge: str) -> str:
    return hmac.new(key, challenge.encode("ascii", "replace"), hashlib.sha256).hexdigest()


def connect(folder: Path) -> Connection:
    """A connected, authenticated client connection to ``folder``'s worker (OSError / EOFError when none)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn = Connection(sock)
    try:
        sock.connect(socket_path(folder))
        conn.offer_handshake(authkey(folder))
    except BaseException:
        conn.close()
        raise
    return conn


def listen(folder: Path) -> socket.socket:
    """The worker's listening socket for ``folder`` (an old socket file is replaced; mode 0600)."""
    path = socket_path(folder)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock
