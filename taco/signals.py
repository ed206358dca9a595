"""SIGINT and SIGTERM, as Ctrl-C and schedulers send them: `timeout`, SLURM and systemd signal the whole
process group, worker processes included.

The main process decides what a stop means; worker processes ignore both signals, so that a group signal
never kills a worker (and with it the run) while the main process is still saving. A stopped command exits
with 128 + the signal's number, 130 for SIGINT and 143 for SIGTERM, as a shell reports a process the
signal killed, so that a scheduler knows the job was interrupted and did not finish.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    return 128 + signum


def ignore_stop_signals(*_) -> None:
    """Leave SIGINT and SIGTERM to the main process; call it first in a worker process (a DataLoader's
    `worker_init_fn`)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the work; `signum` says which, and `kept`, when given, what was saved.

    A BaseException, as KeyboardInterrupt is: code that turns any Exception of one file into that file's
    error (a torch.load of a foreign file, one utterance of a corpus) must not turn a stop into one."""

    def __init__(self, signum: int, kept: str | None = None):
        super().__init__(f"interrupted by {signal.Signals(signum).name}" + (f"; {kept}" if kept else ""))
        self.signum = signum


@contextlib.contextmanager
def interrupted_by_signals():
    """SIGINT and SIGTERM raise Interrupted in the main thread, for work that may stop anywhere (every file
    it writes is renamed into place when complete)."""

    def interrupt(signum, frame):
        raise Interrupted(signum)

    with _handled(interrupt):
        yield


def until_interrupted(items: Iterable) -> tuple[list, Interrupted | None]:
    """The items of `items` produced before a stop, and the stop (None when all were): for long work whose
    finished part is worth saving. Ctrl-C without interrupted_by_signals (KeyboardInterrupt, as in a
    notebook) stops it too, as SIGINT."""
    done = []
    try:
        for item in items:
            done.append(item)
    except Interrupted as stop:
        return done, stop
    except KeyboardInterrupt:
        return done, Interrupted(signal.SIGINT)
    return done, None


class StopRequest:
    """Notes SIGINT and SIGTERM instead of stopping: a loop checks `signum` where stopping is safe."""

    def __init__(self):
        self.signum: int | None = None

    def _note(self, signum, frame):
        self.signum = signum

    @contextlib.contextmanager
    def installed(self):
        with _handled(self._note):
            yield self


@contextlib.contextmanager
def _handled(handler):
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, former in previous.items():
            signal.signal(signum, former)
