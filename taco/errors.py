"""Errors as the one line a user reads: in a preprocess report, or as the CLI's message."""

from __future__ import annotations

import os


def one_line(error: BaseException) -> str:
    """Why `error` happened, in one line without the path (the caller names the file).

    An OSError with an errno gives the system's words for it ("No space left on device"): h5py's messages for
    the same errors run over several lines and repeat the path and the file descriptor.
    """
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
