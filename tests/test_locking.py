"""One writer per folder: a second preprocess into a store, or a second training into a run folder, is
refused with a message naming the holder; a lock its dead holder left behind is taken over."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from conftest import MICRO
from taco.cli import main
from taco.locking import LOCK_FILE, LockError, exclusive_lock

HOLDER = f"pid {os.getpid()} on {socket.gethostname()}"


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with exclusive_lock(tmp_path, "run folder"):
        with pytest.raises(LockError, match=f"this run folder is being written by {HOLDER} since "):
            with exclusive_lock(tmp_path, "run folder"):
                pass
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text("pid 999999 on a-host-long-gone since 2020-01-01T00:00:00+00:00\n")
    with exclusive_lock(tmp_path, "run folder"):
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"{HOLDER} since ")


def test_preprocess_refuses_a_store_another_run_is_writing(make_corpus, tmp_path):
    store = tmp_path / "store"
    with exclusive_lock(store, "feature store"):
        result = CliRunner().invoke(main, ["preprocess", str(make_corpus(2)), str(store), "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"this feature store is being written by {HOLDER}" in result.output


def test_a_second_training_into_a_run_folder_is_refused_while_the_first_runs(small_store, tmp_path):
    config, run = tmp_path / "micro.json", tmp_path / "run"
    config.write_text(json.dumps(MICRO))
    first = subprocess.Popen([sys.executable, "-m", "taco", "train", str(small_store), str(run), "--config", str(config),
                              "--device", "cpu", "--quiet", "--max-steps", "100000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "step_00000004.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        second = CliRunner().invoke(main, ["train", str(small_store), str(run), "--resume", "--device", "cpu", "--quiet"])
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.communicate(timeout=120)
    assert second.exit_code == 1 and second.output.count("\n") == 1
    assert f"this run folder is being written by pid {first.pid} on {socket.gethostname()}" in second.output
