"""Files that are complete or not there: what a reader finds after a stop, a crash or a full disk."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def replaced_when_written(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to, renamed to `path` when the block ends and removed when it
    fails or is stopped: `path` keeps its previous content, or stays absent, until the new one is whole."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
