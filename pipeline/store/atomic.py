"""Atomic file writes and the store's lock file.

Every file of a store is built (in memory, for HDF5) and written under a temporary name, fsynced and moved into
place with ``os.replace``: a reader or a resumer sees the old file or the complete new one, whatever happens. A
full disk is a :class:`~attnviz.pipeline.store.format.StoreError` that says the store is intact. Changes to the
index happen under an exclusive ``fcntl`` lock on ``STORE.h5.lock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import h5py

from attnviz.pipeline.store.format import StoreError, one_line

_IMAGE_IDS = itertools.count()  # unique names of in-memory HDF5 files


def h5_image(fill: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file built in memory by ``fill`` (nothing touches the disk)."""
    name = f"attnviz-{os.getpid()}-{threading.get_ident()}-{next(_IMAGE_IDS)}.mem"
    with h5py.File(name, "w", driver="core", backing_store=False) as f:
        fill(f)
        f.flush()
        return f.id.get_file_image()


def write_h5_atomically(path: Path, fill: Callable[[h5py.File], None], *, tmp: Path | None = None) -> None:
    """Build an HDF5 file in memory with ``fill``, then write it to ``path.tmp-…``, fsync and rename.

    HDF5 never writes to the disk itself, so a full disk is a clean ``OSError`` from Python's own write (HDF5 2.0
    crashed on closing a file after ENOSPC), and the previous file at ``path`` stays intact whatever happens.
    ``tmp``: the temporary file (see :func:`write_bytes_atomically`).
    """
    try:
        image = h5_image(fill)
    except BaseException as exc:
        raise disk_error(exc, path) from exc
    write_bytes_atomically(path, image, tmp=tmp)


def write_bytes_atomically(path: Path, image: bytes, *, tmp: Path | None = None) -> None:
    """Write ``image`` to ``path.tmp-…``, fsync and rename it to ``path``: ``path`` is either the old file or
    the complete new one, whatever happens (a full disk is a StoreError that says so).

    ``tmp``: another temporary file (in the same folder) than ``path.tmp-<pid>-<thread>``, for a file that
    lives in a run's shard folder but is not a shard (a resuming writer removes the shards' ``*.tmp-*`` files).
    """
    if tmp is None:
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as out:
            out.write(image)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise disk_error(exc, path) from exc


def disk_error(exc: BaseException, path: Path) -> BaseException:
    """A full disk (or file-size limit) as a StoreError that says the store is intact; other errors unchanged."""
    text = str(exc)
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    if full or "No space left" in text or "File too large" in text or "Disk quota" in text:
        return StoreError(f"no space left on the device writing {path.name}: the store is intact up to the last "
                          "committed shard; free space (or use another --store) and rerun the same command to resume")
    return exc


def fsync_path(path: Path) -> None:
    """fsync a file or folder by path (a folder: so that a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def lock_file(store: Path) -> Iterator[IO[str]]:
    """The store's lock file ``STORE.h5.lock``, opened (created if need be) but not locked.

    A folder where it cannot be created is a one-line StoreError.
    """
    lock_path = store.with_name(store.name + ".lock")
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a+")  # noqa: SIM115 - closed below, after the lock is released
    except OSError as exc:
        raise StoreError(f"cannot create the lock file {lock_path} for the store ({exc.strerror or one_line(exc)}): "
                         "give a --store in a writable folder") from exc
    with lock:
        yield lock


@contextlib.contextmanager
def exclusive_lock(store: Path) -> Iterator[None]:
    """Hold the exclusive lock of a store (``fcntl.flock`` on its lock file) for the ``with`` block."""
    with lock_file(store) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
