"""Progress bars stay live on a terminal and stay short in a log file or a pipe."""

import io
import sys
import time

from tqdm import tqdm

from taco.progress import print_above_bars, progress_bar

STEPS = 50
STEP_SECONDS = 0.01  # 0.5 s in all: five times tqdm's default redraw interval of 0.1 s


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def redraws(make_bar, stream: io.StringIO) -> int:
    with make_bar(total=STEPS, desc="work", file=stream) as bar:
        for _ in range(STEPS):
            time.sleep(STEP_SECONDS)
            bar.update()
    return stream.getvalue().count("work")


def test_a_bar_written_to_a_log_file_or_pipe_draws_only_its_start_and_end_over_many_quick_steps():
    assert redraws(tqdm, io.StringIO()) >= 4  # what a plain tqdm bar leaves in a log
    assert redraws(progress_bar, io.StringIO()) <= 2


def test_a_bar_on_a_terminal_keeps_redrawing_as_it_goes():
    assert redraws(progress_bar, Terminal()) >= 4


def test_a_line_printed_during_a_bar_is_only_the_line_in_a_log_and_above_the_bar_on_a_terminal(monkeypatch):
    for stream, bar_text_with_the_line in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.setattr(sys, "stdout", stream)
        with progress_bar(total=2, desc="work") as bar:
            bar.update()
            before = stream.getvalue()
            print_above_bars("out/0001.wav  1.00 s")
            printed = stream.getvalue()[len(before):]
        assert "out/0001.wav  1.00 s\n" in printed
        # on a terminal the bar is cleared before the line and drawn again after it
        assert ("work" in printed) == bar_text_with_the_line
