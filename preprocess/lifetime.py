"""Build processes that must not outlive the build.

- `build_lock`: one build at a time per output root, by an OS file lock (flock) held for the
  whole build; the kernel drops it when the holder dies, so a killed build never blocks the
  next one, and a second build while one runs is refused naming the holder's pid.
- `die_with_parent`: on Linux the kernel kills a process when its parent exits
  (PR_SET_PDEATHSIG), so after a kill -9 of a multi-worker build neither its forkserver nor
  its workers keep running.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".build.lock"
PR_SET_PDEATHSIG = 1


class BuildLocked(Exception):
    """Another live build holds the output root."""


@contextmanager
def build_lock(out: Path) -> Iterator[Path]:
    """Hold OUT/.build.lock (created if needed) exclusively for the duration of the block."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise BuildLocked(
                f"{out}: another build (pid {holder}) is writing to this output root; "
                f"one build at a time per output root (lock: {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays, so no one locks a name being removed


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux; no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
