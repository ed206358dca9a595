"""SIGINT and SIGTERM: the main process decides, and a stopped command exits 130 or 143.

Training's group signal, saved and resumed exactly, is in test_train.py."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from taco.cli import main
from taco.features.store import FeatureStore
from taco.signals import Interrupted, StopRequest, exit_status, interrupted_by_signals, until_interrupted

from conftest import signal_on_call


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_work_that_may_stop_anywhere_is_interrupted_with_the_signals_exit_status(signum, status):
    with pytest.raises(Interrupted) as stopped, interrupted_by_signals():
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler interrupts this
    assert stopped.value.signum == signum and exit_status(signum) == status


def test_a_stop_request_only_notes_the_signal_and_restores_the_handlers_after():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest().installed() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_long_work_keeps_what_it_produced_before_a_stop_and_ctrl_c_counts_as_sigint():
    def count(stop):
        yield 1
        yield 2
        raise stop

    assert until_interrupted(iter([1, 2])) == ([1, 2], None)
    done, stop = until_interrupted(count(Interrupted(signal.SIGTERM)))
    assert done == [1, 2] and stop.signum == signal.SIGTERM
    done, stop = until_interrupted(count(KeyboardInterrupt()))
    assert done == [1, 2] and stop.signum == signal.SIGINT and str(stop) == "interrupted by SIGINT"
    assert str(Interrupted(signal.SIGINT, "2 kept")) == "interrupted by SIGINT; 2 kept"


def test_a_stop_while_a_checkpoint_loads_is_a_stop_and_not_an_unreadable_file(micro_checkpoint, tmp_path,
                                                                              monkeypatch):
    # the loader turns any Exception of torch.load into "not a readable checkpoint"; a stop is no Exception
    monkeypatch.setattr(torch, "load", signal_on_call(torch.load, 1, signal.SIGTERM))
    result = CliRunner().invoke(main, ["inspect-alignment", str(micro_checkpoint), "--text", "Hi.",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 143 and result.output.strip() == "interrupted by SIGTERM", result.output


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_a_group_sigterm_stops_preprocess_with_status_143_and_a_rerun_finishes_the_store(make_corpus, tmp_path,
                                                                                        backend):
    store = tmp_path / "store"
    count = 60  # enough that the signal cannot arrive after the last shard
    # loky: worker processes in the group, as under a scheduler; threading: worker threads inside torch and
    # libsndfile, which the interpreter must not exit under (it aborted with SIGABRT). One utterance per
    # shard, so that the signal arrives with some shards written and others not
    command = [sys.executable, "-m", "taco", "preprocess", str(make_corpus(count)), str(store), "--shard-size", "1",
               "--jobs", "2", "--backend", backend, "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    # the first shard written, whichever it is: the workers finish their tasks in no fixed order
    while not any((store / "shards").glob("*.h5")) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGTERM)
    _, errors = process.communicate(timeout=120)

    assert process.returncode == 143, errors.decode()
    assert errors.decode().strip() == "interrupted by SIGTERM: the finished shards are kept; run the same command again to finish"
    assert len(list((store / "shards").glob("*.h5"))) < count, "finished before the signal"
    if backend == "threading":  # the shards in progress were finished; loky's workers are killed mid-shard
        assert list((store / "shards").glob("*.tmp-*")) == []

    rerun = subprocess.run(command, capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert len(FeatureStore(store)) == count


def test_every_name_the_package_exports_resolves():
    import taco

    assert taco.Interrupted is Interrupted
    for name in taco.__all__:
        assert getattr(taco, name).__name__ == name
