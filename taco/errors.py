"""Errors as the one line a user reads: in a preprocess report, or as the CLI's message."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def one_line(error: BaseException) -> str:
    """Why `error` happened, in one line without the path (the caller names the file).

    An OSError with an errno gives the system's words for it ("No space left on device"): h5py's messages for
    the same errors run over several lines and repeat the path and the file descriptor.
    """
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_utf8(path: str | os.PathLike) -> str:
    """The text of `path`, or of standard input when `path` is "-"; a ValueError naming the file when it is
    not UTF-8 (a Latin-1 or UTF-16 file, or a binary file given by mistake), where Python's own message
    names only a byte."""
    try:
        if str(path) == "-":
            return sys.stdin.buffer.read().decode("utf-8")
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{describe_file(path)}: not UTF-8 text (byte {error.start}: {error.reason}); "
                         "save it as UTF-8") from None


def describe_file(path: str | os.PathLike) -> str:
    """How a message names `path`: "standard input" for "-"."""
    return "standard input" if str(path) == "-" else str(path)
