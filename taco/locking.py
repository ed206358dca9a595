"""One writer per folder: a feature store has one preprocess run at a time, a run folder one training.

The writer holds an exclusive `flock` on LOCK_FILE in the folder, and writes its pid, host and start time
into the file for the message that refuses a second writer. The kernel releases the lock when its holder
ends, however it ends (SIGKILL included), so a lock file that a dead process left behind is stale by
construction: the next writer takes it over. On NFS, Linux carries flock as a POSIX lock that the server
arbitrates between hosts.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = "taco.lock"


class LockError(Exception):
    """Another process writes the folder; str() is a one-line explanation naming it."""


@contextlib.contextmanager
def exclusive_lock(folder: Path, what: str):
    """Hold `folder`'s writer lock (creating the folder) for the body; LockError names the holder if another
    process has it. `what` names the folder's content in the message: "feature store", "run folder"."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    descriptor = _locked(path, what)
    try:
        since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
        yield
    finally:
        # removed while still locked: a writer that opened the file before sees it gone and starts over
        path.unlink(missing_ok=True)
        os.close(descriptor)


def _locked(path: Path, what: str) -> int:
    """An open descriptor of the file at `path`, emptied and exclusively locked."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(descriptor)
            raise LockError(f"{path.parent}: this {what} is being written by {holder} (lock file {path}); "
                            "wait for it to finish, or choose another folder") from None
        try:
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                os.ftruncate(descriptor, 0)  # a stale holder's line
                return descriptor
        except FileNotFoundError:
            pass
        # the holder released the lock and removed the file between our open and our flock: try again
        os.close(descriptor)
