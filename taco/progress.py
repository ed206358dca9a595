"""Progress bars: redrawn live on a terminal, and rarely where stderr is a log file or a pipe.

On a terminal tqdm redraws one line in place; anywhere else every redraw stays in the output, so its
default of ten a second turns a training log (or the demo script's pipe) into thousands of bar lines.
"""

from __future__ import annotations

import contextlib
import sys
from typing import IO, Iterable

from tqdm import tqdm

# Seconds between redraws of a bar that is not on a terminal: tqdm's own default maxinterval, the
# longest its monitor lets a bar go without a redraw, so a log still shows the rate every 10 seconds.
LOG_REDRAW_SECONDS = 10.0


def progress_bar(iterable: Iterable | None = None, file: IO[str] | None = None, **options) -> tqdm:
    """A tqdm bar on `file` (default stderr) that redraws at most every LOG_REDRAW_SECONDS unless `file`
    is a terminal. `options` go to tqdm unchanged."""
    file = sys.stderr if file is None else file
    if not file.isatty():
        options["mininterval"] = LOG_REDRAW_SECONDS
    return tqdm(iterable, file=file, **options)


def print_above_bars(line: str, err: bool = False) -> None:
    """Print a line (to stdout, or stderr with `err`), flushed so that a log keeps the two in order. On a
    terminal tqdm clears its bars first and draws them again below the line; in a log file or a pipe that
    would add a bar to every line, so there the line is printed as it is."""
    file = sys.stderr if err else sys.stdout
    bars_live = sys.stderr.isatty()  # where progress_bar draws them
    with tqdm.external_write_mode(file=file) if bars_live else contextlib.nullcontext():
        print(line, file=file, flush=True)
