"""Training: the loss falls, checkpoints stand alone, resume is exact, bad states are refused."""

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import pytest
import torch
from click.testing import CliRunner

import taco.pipeline.train as training
from taco.cli import main
from taco.features.store import FeatureStore
from taco.pipeline.batching import collate
from taco.pipeline.checkpoint import CheckpointError, load_checkpoint, restore_rng_states, save_checkpoint, step_file
from taco.pipeline.losses import guided_attention_loss, masked_mel_error, tacotron2_loss
from taco.pipeline.model import Decoder, ModelConfig, Tacotron2, Tacotron2Output, mask_from_lens
from taco.pipeline.train import TrainingError, make_loaders, train
from taco.pipeline.synth import SynthConfig, synthesize
from taco.pipeline.train_config import TrainConfig, learning_rate_factor, scheduled_sampling_rate

from conftest import MICRO, micro

@pytest.fixture
def micro_config(tmp_path):
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(MICRO))
    return path


def test_loss_falls_when_overfitting_two_utterances(small_store):
    torch.manual_seed(0)
    store = FeatureStore(small_store)
    model_config, _ = micro()
    model_config = ModelConfig.from_dict(model_config.to_dict() | {"n_symbols": len(store.symbols)})
    model = Tacotron2(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    shortest = store.split_indices("train")[store.n_frames[store.split_indices("train")].argsort()[:2]]
    batch = collate([store[int(row)] for row in shortest], model_config.reduction_factor)
    losses = []
    for _ in range(30):
        output = model(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"])
        terms = tacotron2_loss(output, batch, model_config.reduction_factor, 5.0, 1.0, 0.4)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        losses.append(terms.total.item())
    assert losses[-1] < 0.5 * losses[0]


def test_guided_attention_is_the_mean_penalty_over_each_items_valid_cells():
    # sigma^2 = 1/8 makes the penalty 1 - exp(-(n/N - t/T)^2 / (2 sigma^2)) = 1 - exp(-4 (n/N - t/T)^2)
    sigma = (1 / 8) ** 0.5
    step_lens, token_lens = torch.tensor([2, 1]), torch.tensor([2, 1])
    alignments = torch.zeros(2, 2, 2)  # (B, T_dec, T_text)
    # item 0, 2 steps x 2 tokens: step 0 on token 0 (0/2 - 0/2 = 0, no penalty), then step 1 stays on
    # token 0 (1/2 - 0/2 = 1/2: penalty 1 - exp(-1))
    alignments[0, 0, 0] = alignments[0, 1, 0] = 1.0
    # item 1, 1 step x 1 token: on the diagonal; its attention on padding cells must not count
    alignments[1, 0, 0] = 1.0
    alignments[1, 1, :] = 0.5
    # 4 + 1 = 5 valid cells
    expected = (1 - math.exp(-1)) / 5
    assert guided_attention_loss(alignments, step_lens, token_lens, sigma).item() == pytest.approx(expected)


def test_the_mel_error_is_the_mean_over_the_real_frames_bins_squared_absolute_or_both():
    # one item of 3 frames x 2 bins whose last frame is padding: its (huge) error must not count
    prediction = torch.tensor([[[1.0, -2.0], [0.5, 0.0], [100.0, 100.0]]])
    target = torch.zeros(1, 3, 2)
    frame_mask = torch.tensor([[True, True, False]])
    # 4 real cells with errors 1, -2, 0.5, 0
    assert masked_mel_error(prediction, target, frame_mask, "mse").item() == pytest.approx((1 + 4 + 0.25) / 4)
    assert masked_mel_error(prediction, target, frame_mask, "l1").item() == pytest.approx((1 + 2 + 0.5) / 4)
    assert masked_mel_error(prediction, target, frame_mask, "l1+mse").item() == pytest.approx((5.25 + 3.5) / 4)


def test_training_scores_the_mels_with_the_error_its_config_names(small_store):
    _, train_config = micro()
    with pytest.raises(ValueError, match="mel_loss"):
        dataclasses.replace(train_config, mel_loss="huber")
    store = FeatureStore(small_store)
    model_config = ModelConfig.from_dict(micro()[0].to_dict() | {"n_symbols": len(store.symbols)})
    batch = collate([store[int(row)] for row in store.split_indices("train")[:2]], model_config.reduction_factor)
    output = Tacotron2(model_config).eval()(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"])
    frame_mask = mask_from_lens(batch["mel_lens"], batch["mels"].shape[1])
    for kind in ("mse", "l1"):
        terms = training._loss(output, batch, model_config, dataclasses.replace(train_config, mel_loss=kind), step=0)
        expected = masked_mel_error(output.mels, batch["mels"], frame_mask, kind)
        assert terms.mel.item() == pytest.approx(expected.item())


def test_the_ctc_term_is_minus_the_log_probability_of_the_text_per_token():
    """Two frames read as symbols {blank, a}: the text "a" is read by the paths a a, a blank and blank a."""
    p_a = torch.tensor([0.6, 0.3])  # P(a) at frames 0 and 1; the rest is the blank's
    recognized = torch.stack([1 - p_a, p_a], dim=-1).log()[None]  # (B=1, T_mel=2, n_symbols=2)
    batch = {"tokens": torch.tensor([[1]]), "token_lens": torch.tensor([1]), "mels": torch.zeros(1, 2, 1),
             "mel_lens": torch.tensor([2]), "gate_targets": torch.tensor([[0.0, 1.0]])}
    output = Tacotron2Output(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), torch.zeros(1, 2), torch.ones(1, 2, 1),
                             recognized)
    terms = tacotron2_loss(output, batch, 1, 5.0, 0.0, 0.2, ctc_weight=0.5)

    paths = p_a[0] * p_a[1] + p_a[0] * (1 - p_a[1]) + (1 - p_a[0]) * p_a[1]
    assert terms.ctc.item() == pytest.approx(-math.log(paths))
    assert (terms.total - terms.mel - terms.postnet - terms.gate).item() == pytest.approx(0.5 * terms.ctc.item())


def test_a_run_with_a_text_recognizer_trains_it_and_synthesizes_without_it(small_store, tmp_path):
    model_config, train_config = micro(max_steps=4, ctc_weight=0.3)
    model_config = dataclasses.replace(model_config, recognizer_channels=8)
    summary = train(small_store, tmp_path / "run", model_config, train_config, progress=False)
    assert summary["last_loss"]["ctc"] > 0
    checkpoint = load_checkpoint(Path(summary["checkpoint"]))
    assert any(name.startswith("recognizer.") for name in checkpoint["model"])
    utterance = synthesize(summary["checkpoint"], ["Hello."], SynthConfig(max_decoder_steps=5), device="cpu")[0]
    assert len(utterance.wave) > 0


def test_learning_rate_warms_up_then_decays_to_the_final_rate():
    config = TrainConfig(warmup_steps=10, max_steps=110, learning_rate=1e-3, final_learning_rate=1e-5)
    factors = [learning_rate_factor(step, config) for step in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[110] == pytest.approx(0.01)


def test_scheduled_sampling_ramps_up_to_its_rate_and_then_holds():
    config = TrainConfig(scheduled_sampling=0.4, scheduled_sampling_ramp=100)
    assert [scheduled_sampling_rate(step, config) for step in (0, 50, 100, 5000)] == pytest.approx([0, 0.2, 0.4, 0.4])
    assert scheduled_sampling_rate(0, dataclasses.replace(config, scheduled_sampling_ramp=0)) == 0.4
    with pytest.raises(ValueError, match="scheduled_sampling"):
        TrainConfig(scheduled_sampling=1.5)


def _model_and_batch(store_dir, r):
    store = FeatureStore(store_dir)
    model_config, _ = micro()
    model_config = ModelConfig.from_dict(model_config.to_dict() | {"n_symbols": len(store.symbols),
                                                                  "reduction_factor": r})
    rows = store.split_indices("train")[:3]
    return Tacotron2(model_config), collate([store[int(row)] for row in rows], r)


def test_the_decoder_reads_the_fed_frames_and_is_scored_against_the_targets(small_store):
    model, batch = _model_and_batch(small_store, 2)
    args = batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"]
    model.eval()
    torch.manual_seed(0)
    teacher_forced = model(*args)
    torch.manual_seed(0)
    assert torch.equal(model(*args, batch["mels"]).mels, teacher_forced.mels)
    torch.manual_seed(0)
    assert not torch.allclose(model(*args, torch.zeros_like(batch["mels"])).mels, teacher_forced.mels)


def test_scheduled_sampling_feeds_each_decoder_step_its_target_or_the_models_own_prediction(small_store):
    r = 2
    model, batch = _model_and_batch(small_store, r)
    batch = training._to_device(batch, torch.device("cpu"))  # as the training loop hands it over
    model.eval()  # the prediction must not depend on the dropout draws below
    targets = batch["mels"]
    assert training._fed_mels(model, batch, 0.0, r) is targets
    with torch.no_grad():
        torch.manual_seed(0)
        predicted = model(batch["tokens"], batch["token_lens"], targets, batch["mel_lens"]).mels
        # within each item's frames: past its end the frames feed only steps that the loss masks
        real = mask_from_lens(batch["mel_lens"], targets.shape[1])[:, :, None]  # (B, T_mel, 1)
        torch.manual_seed(0)
        assert torch.equal(training._fed_mels(model, batch, 1.0, r) * real, predicted)
        torch.manual_seed(0)
        fed = training._fed_mels(model, batch, 0.5, r) * real
    # per decoder step, its r frames come all from the targets or all from the prediction
    steps = lambda mels: mels.unflatten(1, (-1, r))  # (B, T_mel, n_mels) -> (B, T_dec, r, n_mels)
    from_targets = (steps(fed) == steps(targets * real)).flatten(2).all(-1)  # (B, T_dec)
    from_prediction = (steps(fed) == steps(predicted)).flatten(2).all(-1)
    assert (from_targets | from_prediction).all()
    assert from_targets.any() and (from_prediction & ~from_targets).any()


def test_a_run_with_scheduled_sampling_trains(small_store, tmp_path):
    model_config, train_config = micro(max_steps=4, scheduled_sampling=0.5, scheduled_sampling_ramp=2)
    summary = train(small_store, tmp_path / "run", model_config, train_config, progress=False)
    assert summary["steps"] == 4 and math.isfinite(summary["last_loss"]["total"])


def test_a_run_writes_config_checkpoints_plots_samples_and_logs(micro_run):
    run, summary = micro_run
    assert summary["steps"] == 8 and summary["stopped_by"] == "max_steps"
    assert json.loads((run / "config.json").read_text())["model"]["reduction_factor"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "step_00000004.pt", "step_00000008.pt"]
    assert (run / "plots" / "alignment_teacher_forced_step_00000008.png").stat().st_size > 0
    assert (run / "plots" / "alignment_free_running_step_00000004.png").stat().st_size > 0
    assert (run / "samples" / "step_00000008.wav").stat().st_size > 44
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run / "logs"))


def test_best_checkpoint_resumes_at_the_start_of_the_epoch_after_its_validation(micro_run):
    best = load_checkpoint(micro_run[0] / "checkpoints" / "best.pt")
    assert best["progress"]["epoch"] >= 1 and best["progress"]["batches_done"] == 0
    assert (best["sampler"]["epoch"], best["sampler"]["position"]) == (best["progress"]["epoch"], 0)


def test_checkpoint_loads_with_weights_only_and_stands_alone(small_store, micro_run):
    checkpoint = torch.load(micro_run[0] / "checkpoints" / "step_00000004.pt", weights_only=True)

    store = FeatureStore(small_store)
    assert checkpoint["symbols"] == store.symbols
    assert checkpoint["feature_config"] == store.info["feature_config"]
    assert checkpoint["text_config"] == store.info["text_config"]
    assert checkpoint["store_fingerprint"] == store.fingerprint
    assert checkpoint["progress"]["step"] == 4
    model = Tacotron2(ModelConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])


def run_cli(*args, **popen):
    command = [sys.executable, "-m", "taco", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def weights(run_dir, step):
    return load_checkpoint(run_dir / "checkpoints" / step_file(step))["model"]


def wait_for(path, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


# steps of the runs that are interrupted and resumed, and of the uninterrupted run they must equal
RESUME_STEPS = 12


def write_config(path, **training):
    """The MICRO config as a JSON file, with training fields replaced by `training`."""
    path.write_text(json.dumps(MICRO | {"training": MICRO["training"] | training}))
    return path


@pytest.fixture(scope="module")
def straight_run(small_store, tmp_path_factory):
    """An uninterrupted MICRO run of RESUME_STEPS steps through the CLI: its run folder."""
    root = tmp_path_factory.mktemp("straight")
    process = run_cli("train", small_store, root / "run", "--config", write_config(root / "micro.json"),
                      "--device", "cpu", "--quiet", "--max-steps", RESUME_STEPS)
    assert process.wait() == 0, process.stderr.read().decode()
    return root / "run"


def assert_same_weights(run_dir, other_run_dir, step):
    expected, actual = weights(run_dir, step), weights(other_run_dir, step)
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name


def resume_cli(store, run_dir):
    resumed = run_cli("train", store, run_dir, "--resume", "--device", "cpu", "--quiet", "--max-steps", RESUME_STEPS)
    assert resumed.wait() == 0, resumed.stderr.read().decode()


def test_a_run_killed_with_sigkill_and_resumed_matches_an_uninterrupted_run(small_store, straight_run, micro_config, tmp_path):
    killed = run_cli("train", small_store, tmp_path / "killed", "--config", micro_config, "--device", "cpu", "--quiet",
                     "--max-steps", RESUME_STEPS)
    wait_for(tmp_path / "killed" / "checkpoints" / step_file(4))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "checkpoints" / step_file(RESUME_STEPS)).exists(), "finished before the kill"

    resume_cli(small_store, tmp_path / "killed")

    assert_same_weights(straight_run, tmp_path / "killed", RESUME_STEPS)


def test_a_group_sigterm_saves_the_step_exits_143_and_resume_matches_an_uninterrupted_run(small_store, straight_run, tmp_path):
    # as timeout, SLURM and systemd do: SIGTERM to the whole process group, two DataLoader workers included
    config = write_config(tmp_path / "workers.json", num_workers=2)
    run = tmp_path / "run"
    process = run_cli("train", small_store, run, "--config", config, "--device", "cpu", "--quiet",
                      "--max-steps", RESUME_STEPS, start_new_session=True)
    wait_for(run / "checkpoints" / step_file(4))
    os.killpg(process.pid, signal.SIGTERM)
    output, errors = process.communicate(timeout=120)

    assert process.returncode == 143, errors.decode()
    summary = json.loads(output)
    assert summary["stopped_by"] == "signal" and summary["signal"] == "SIGTERM"
    assert summary["steps"] < RESUME_STEPS, "finished before the signal"
    assert summary["checkpoint"].endswith(step_file(summary["steps"]))

    resume_cli(small_store, run)

    assert_same_weights(straight_run, run, RESUME_STEPS)


def test_resume_refuses_a_store_with_another_fingerprint(small_store, tmp_path, make_corpus):
    model_config, train_config = micro(max_steps=4)
    train(small_store, tmp_path / "run", model_config, train_config, progress=False)
    from taco.features.mel import FeatureConfig
    from taco.features.preprocess import preprocess

    other = tmp_path / "other_store"
    preprocess(make_corpus(4), other, FeatureConfig(normalization="log"), jobs=1, val_count=1, progress=False)
    with pytest.raises(TrainingError, match="fingerprint"):
        train(other, tmp_path / "run", resume=True, progress=False)


@pytest.fixture
def copied_run(micro_run, tmp_path):
    """A copy of the MICRO run's folder, to change and resume."""
    return shutil.copytree(micro_run[0], tmp_path / "run")


def test_a_run_whose_only_checkpoint_is_best_resumes_from_it_exactly_and_refuses_a_new_run(small_store, micro_run, copied_run):
    for path in (copied_run / "checkpoints").glob("step_*.pt"):
        path.unlink()
    with pytest.raises(TrainingError, match=r"already holds checkpoints \(best.pt\)"):
        train(small_store, copied_run, *micro(), progress=False)

    summary = train(small_store, copied_run, resume=True, progress=False)

    assert summary["steps"] == 8
    assert_same_weights(micro_run[0], copied_run, 8)


def test_a_truncated_latest_checkpoint_is_passed_over_with_a_warning_naming_both(small_store, micro_run, copied_run, capsys):
    latest = copied_run / "checkpoints" / step_file(8)
    latest.write_bytes(latest.read_bytes()[:1000])

    train(small_store, copied_run, resume=True, progress=False)

    warning = capsys.readouterr().err
    assert f"warning: {latest}: not a readable taco checkpoint" in warning and "resuming from" in warning
    assert_same_weights(micro_run[0], copied_run, 8)


def test_the_next_run_removes_the_temporary_files_of_killed_saves(small_store, copied_run):
    leftover = copied_run / "checkpoints" / f"{step_file(12)}.tmp-99999"
    leftover.write_bytes(b"half a checkpoint")
    train(small_store, copied_run, resume=True, progress=False)
    assert not leftover.exists()


def test_resume_accepts_the_runs_own_config_and_refuses_another_naming_the_fields(small_store, copied_run, micro_config):
    own = CliRunner().invoke(main, ["train", str(small_store), str(copied_run), "--resume", "--config", str(micro_config),
                                    "--device", "cpu", "--quiet"])
    assert own.exit_code == 0, own.output

    own_rate = micro()[1].learning_rate
    other = f"the run's {own_rate}, given {2 * own_rate}"
    with pytest.raises(TrainingError, match=r"keeps its configuration.*training.learning_rate \(" + re.escape(other)):
        train(small_store, copied_run, *micro(learning_rate=2 * own_rate), resume=True, progress=False)


def test_resume_refuses_a_store_of_other_utterances_made_the_same_way(small_store, copied_run, tmp_path, make_corpus):
    from taco.features.preprocess import preprocess

    other = tmp_path / "other_store"
    preprocess(make_corpus(4), other, jobs=1, val_count=1, progress=False)
    assert FeatureStore(other).fingerprint == FeatureStore(small_store).fingerprint
    with pytest.raises(TrainingError, match=f"the 8 training utterances of {small_store}, but {other} holds other "
                                            r"utterances \(3 for training\)"):
        train(other, copied_run, resume=True, progress=False)


def test_a_new_run_refuses_a_folder_that_holds_checkpoints(small_store, tmp_path):
    model_config, train_config = micro(max_steps=4)
    train(small_store, tmp_path / "run", model_config, train_config, progress=False)
    with pytest.raises(TrainingError, match="--resume"):
        train(small_store, tmp_path / "run", model_config, train_config, progress=False)


def poison_steps(monkeypatch, steps):
    """Make the loss NaN at the given steps (counted from 0, as the schedule counts them)."""
    real_loss = training._loss

    def poisoned(output, batch, model_config, train_config, step):
        terms = real_loss(output, batch, model_config, train_config, step)
        return terms._replace(total=terms.total * float("nan")) if step in steps else terms

    monkeypatch.setattr(training, "_loss", poisoned)


def test_non_finite_losses_skip_steps_and_too_many_stop_the_run(small_store, tmp_path, monkeypatch):
    poison_steps(monkeypatch, range(4, 50))
    model_config, train_config = micro(max_steps=50, max_nonfinite_steps=3)
    with pytest.raises(TrainingError, match="NaN/inf for 3 steps in a row by step 7.*step_00000004.pt"):
        train(small_store, tmp_path / "run", model_config, train_config, progress=False)


def test_skips_in_a_row_between_log_steps_stop_the_run_at_the_next_one(small_store, tmp_path, monkeypatch):
    # the skips are counted on the device and read every log_every steps: steps 5-7 skipped, 8 trained
    poison_steps(monkeypatch, {4, 5, 6})
    with pytest.raises(TrainingError, match="NaN/inf for 3 steps in a row by step 8"):
        train(small_store, tmp_path / "run", *micro(max_steps=50, max_nonfinite_steps=3, log_every=4), progress=False)


def test_skips_after_the_last_log_step_are_reported_and_the_summary_keeps_the_last_trained_loss(
        small_store, tmp_path, monkeypatch, capsys):
    poison_steps(monkeypatch, {5})
    summary = train(small_store, tmp_path / "run", *micro(max_steps=6, log_every=4), progress=False)
    assert "1 of steps 5-6: loss or gradient was NaN/inf, skipped" in capsys.readouterr().err
    assert summary["last_loss"]["total"] is not None


def test_a_skipped_first_step_warns_of_nothing_but_the_skip(small_store, tmp_path, monkeypatch, capsys):
    poison_steps(monkeypatch, {0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(small_store, tmp_path / "run", *micro(max_steps=2), progress=False)
    assert summary["steps"] == 2 and "step 1: loss or gradient was NaN/inf" in capsys.readouterr().err
    assert [str(warning.message) for warning in caught] == []


@pytest.fixture
def nan_store(small_store, tmp_path):
    """A copy of `small_store` whose first training utterance has NaN in its first mel frame: (store, that id)."""
    store_dir = shutil.copytree(small_store, tmp_path / "nan_store")
    store = FeatureStore(store_dir)
    position = int(store.split_indices("train")[0])
    shard, row = store.shards[position], store.rows[position]
    with h5py.File(store_dir / "shards" / store.shard_names[shard], "r+") as file:
        file["mels"][file["mel_offsets"][row]] = float("nan")
    return store_dir, store.ids[position]


def test_a_nan_in_a_shard_skips_its_batches_by_name_and_never_reaches_a_checkpoint(nan_store, tmp_path, capsys):
    store, bad_id = nan_store
    summary = train(store, tmp_path / "run", *micro(), progress=False)

    assert f"{bad_id} has NaN/inf in its mel" in capsys.readouterr().err
    json.dumps(summary, allow_nan=False)
    for path in (tmp_path / "run" / "checkpoints").iterdir():
        model = load_checkpoint(path)["model"]
        # the BatchNorm running statistics too, which a forward pass on the NaN would have taken in
        assert all(torch.isfinite(tensor).all() for tensor in model.values() if tensor.is_floating_point()), path.name


def test_a_model_holding_nan_is_never_saved(tmp_path):
    path = tmp_path / "step_00000001.pt"
    with pytest.raises(CheckpointError, match=r"not saved: the model holds NaN/inf in postnet.running_var"):
        save_checkpoint(path, {"model": {"postnet.weight": torch.ones(2), "postnet.running_var": torch.tensor([1.0, math.nan])}})
    assert list(tmp_path.iterdir()) == []


def test_ranks_get_disjoint_batches_of_equal_count(small_store):
    store = FeatureStore(small_store)
    model_config, train_config = micro(batch_frames=800)
    seen = []
    for rank in range(2):
        sampler, loader, _ = make_loaders(store, model_config, train_config, rank=rank, world_size=2)
        sampler.set_epoch(0)
        seen.append([int(length) for batch in loader for length in batch["mel_lens"]])
    assert len(list(make_loaders(store, model_config, train_config, 0, 2)[0])) == len(list(make_loaders(store, model_config, train_config, 1, 2)[0]))
    assert sorted(seen[0] + seen[1]) == sorted(store.n_frames[store.split_indices("train")].tolist())


def test_torchrun_with_two_cpu_processes_trains_and_only_rank_0_writes(small_store, micro_config, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "taco", "train", str(small_store), str(tmp_path / "run"), "--config", str(micro_config),
               "--device", "cpu", "--max-steps", "4", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith("step")) == ["step_00000004.pt"]
    assert len(os.listdir(tmp_path / "run" / "logs")) == 1


def test_training_in_pieces_with_stop_at_equals_one_run(small_store, micro_run, tmp_path):
    model_config, train_config = micro()
    first = train(small_store, tmp_path / "pieces", model_config, train_config, stop_at=4, progress=False)
    second = train(small_store, tmp_path / "pieces", resume=True, progress=False)

    assert (first["stopped_by"], first["steps"]) == ("stop_at", 4)
    assert (second["stopped_by"], second["steps"]) == ("max_steps", 8)
    assert_same_weights(micro_run[0], tmp_path / "pieces", 8)


def test_a_checkpoint_of_the_unfused_adam_of_older_versions_resumes_exactly(small_store, micro_run, tmp_path):
    train(small_store, tmp_path / "old", *micro(), stop_at=4, progress=False)
    path = tmp_path / "old" / "checkpoints" / step_file(4)
    checkpoint = load_checkpoint(path)
    for group in checkpoint["optimizer"]["param_groups"]:
        group["fused"] = None  # as torch.optim.Adam saved it before taco asked for the fused one
    save_checkpoint(path, checkpoint)

    train(small_store, tmp_path / "old", resume=True, progress=False)
    assert_same_weights(micro_run[0], tmp_path / "old", 8)


def test_the_cli_stop_at_ends_a_call_early_and_keeps_the_schedule_for_resume(small_store, micro_run, micro_config,
                                                                             tmp_path):
    run = tmp_path / "pieces"
    first = CliRunner().invoke(main, ["train", str(small_store), str(run), "--config", str(micro_config),
                                      "--stop-at", "4", "--device", "cpu", "--quiet"])
    assert first.exit_code == 0, first.output
    assert '"stopped_by": "stop_at"' in first.output
    assert sorted(path.name for path in (run / "checkpoints").glob("step_*.pt")) == ["step_00000004.pt"]

    train(small_store, run, resume=True, progress=False)
    # the same learning rates as the uninterrupted 8-step run, so the same weights
    assert_same_weights(micro_run[0], run, 8)


def test_the_cli_compile_flag_trains_with_a_compiled_decoder_step_and_saves_plain_weights(small_store, micro_run,
                                                                                          micro_config, tmp_path,
                                                                                          monkeypatch):
    compiled = []
    real_compile_step = Decoder.compile_step
    monkeypatch.setattr(Decoder, "compile_step", lambda decoder: (compiled.append(decoder), real_compile_step(decoder)))
    run = tmp_path / "compiled"
    result = CliRunner().invoke(main, ["train", str(small_store), str(run), "--config", str(micro_config),
                                       "--stop-at", "4", "--device", "cpu", "--compile", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(compiled) == 1
    # the checkpoint (written with its plots and samples, by the compiled step too) holds the weights of any other run
    saved = load_checkpoint(run / "checkpoints" / step_file(4))["model"]
    plain = load_checkpoint(micro_run[0] / "checkpoints" / step_file(4))["model"]
    # (the values differ: inductor draws the dropouts' masks from its own generator; test_model.py compares
    # the compiled step with the eager one)
    assert {name: value.shape for name, value in saved.items()} == {name: value.shape for name, value in plain.items()}


def test_training_reads_scalars_only_at_log_steps(small_store, tmp_path, monkeypatch):
    """Reading a scalar (.item()) makes the host wait for the device: the loop reads the loss and the
    gradient norm every log_every steps, never in between. (torch's own reads, such as the CPU Adam's of
    its step count, which lives on the host, are not the loop's.)"""
    steps_done, read_at = [0], []
    real_step, real_item = training._train_step, torch.Tensor.item
    taco_code = str(Path(training.__file__).parents[1])

    def counting_step(*args, **kwargs):
        result = real_step(*args, **kwargs)
        steps_done[0] += 1
        return result

    def recorded_item(tensor):
        if sys._getframe(1).f_code.co_filename.startswith(taco_code):
            read_at.append(steps_done[0])
        return real_item(tensor)

    monkeypatch.setattr(training, "_train_step", counting_step)
    monkeypatch.setattr(training, "_validate", lambda *args: None)  # validation reads its own scalars at epoch ends
    monkeypatch.setattr(torch.Tensor, "item", recorded_item)
    train(small_store, tmp_path / "run", *micro(log_every=4, checkpoint_every=4), progress=True)
    assert read_at and set(read_at) <= {4, 8}


HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")


def test_a_training_step_reads_nothing_back_from_the_device(small_store, monkeypatch):
    """Every way a tensor's values reach Python makes the host wait for a GPU, which then idles while the host
    queues the next step's work. A step reads nothing, also when it is skipped for NaN: it decides the skip on
    the device, and the encoder packs by the lengths the collate made on the host. (Whoever calls the read,
    taco or torch: the optimizer and the scaler must not read either.)"""
    model, batch = _model_and_batch(small_store, 2)
    model_config, train_config = micro(grad_clip=1.0)
    optimizer, scaler = training.optimizer_and_scaler(model, train_config, None, torch.device("cpu"))
    poisoned = dict(batch, mels=batch["mels"].clone())
    poisoned["mels"][0, 0, 0] = float("inf")  # reaches the loss, not the host's check: a skip found on the device
    reads = []
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda tensor, *args, _real=real, _name=name, **kwargs:
                            reads.append(_name) or _real(tensor, *args, **kwargs))
    states, grad_norms = [model_state(model, optimizer)], []
    for step, fed in enumerate([batch, poisoned, batch]):
        _, grad_norm = training._train_step(model, optimizer, scaler, training._to_device(fed, torch.device("cpu")),
                                            model_config, train_config, step, None, torch.device("cpu"))
        grad_norms.append(grad_norm)
        states.append(model_state(model, optimizer))
    monkeypatch.undo()

    assert reads == []
    assert [bool(torch.isfinite(norm)) for norm in grad_norms] == [True, False, True]
    # the skipped step changed nothing (weights, BatchNorm's statistics, Adam's moments and step count); the others did
    same = [all(torch.equal(a, b) for a, b in zip(first, second)) for first, second in zip(states, states[1:])]
    assert same == [False, True, False]


def model_state(model, optimizer) -> list[torch.Tensor]:
    """Copies of everything a training step may change."""
    optimizer_state = [value for state in optimizer.state_dict()["state"].values() for value in state.values()]
    return [tensor.clone() for tensor in list(model.state_dict().values()) + optimizer_state]


def test_a_run_without_a_config_gets_base_on_cuda_and_tiny_on_the_cpu(monkeypatch):
    from taco.pipeline.presets import default_preset

    assert default_preset("cpu") == "tiny"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_preset(None) == "base"
    assert default_preset("cpu") == "tiny"


def test_training_on_plain_cuda_selects_the_current_gpu_by_its_index(monkeypatch):
    """torch.cuda.set_device refuses a device without an index, and "cuda" (or no --device) has none."""
    selected = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    assert training._pick_device(None) == training._pick_device("cuda") == torch.device("cuda", 0)
    assert selected == [torch.device("cuda", 0)] * 2


def test_resume_on_a_machine_with_fewer_gpus_restores_the_states_of_those_it_has(monkeypatch):
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    two_gpus = [torch.zeros(8, dtype=torch.uint8), torch.ones(8, dtype=torch.uint8)]
    restore_rng_states([{"torch": torch.get_rng_state(), "cuda": two_gpus}], 0, torch.device("cuda"))
    assert restored == [two_gpus[:1]]


def test_a_cpu_run_on_a_machine_with_a_gpu_leaves_cuda_alone(monkeypatch):
    """Reading or setting a CUDA random state starts CUDA in the process, which a CPU run has no use for."""
    def refuse(*args):
        raise AssertionError("a CPU run touched CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", refuse)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)
    [states] = training.rng_states(torch.device("cpu"))
    assert "cuda" not in states
    restore_rng_states([states | {"cuda": [torch.zeros(8, dtype=torch.uint8)]}], 0, torch.device("cpu"))


def test_torchrun_picks_nccl_for_gpus_and_gloo_for_any_spelling_of_the_cpu(monkeypatch):
    backends = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", backends.append)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    for device in (None, "cuda", "cpu", "cpu:0", torch.device("cpu")):
        training._start_distributed(device)
    assert backends == ["nccl", "nccl", "gloo", "gloo", "gloo"]


@pytest.mark.parametrize("local_rank, visible, expected", [(1, 2, 1), (3, 1, 0), (0, 4, 0)])
def test_each_torchrun_rank_takes_its_local_gpu_or_the_only_one_it_sees(monkeypatch, local_rank, visible, expected):
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    assert training._local_gpu() == torch.device("cuda", expected)


def test_more_torchrun_ranks_than_gpus_are_refused_naming_the_count(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(TrainingError, match=r"LOCAL_RANK is 2 but it sees 2 GPUs: .*--nproc_per_node 2"):
        training._local_gpu()


def test_only_a_float16_run_saves_its_loss_scale(micro_run):
    """A float32 (CPU) or bf16 run's scale is 1; a float16 run resumed from it on a GPU keeps its own 2^16."""
    assert "scaler" not in load_checkpoint(micro_run[0] / "checkpoints" / step_file(8))


TORCHRUN_TRAIN = """
import json, os, sys
from pathlib import Path
import torch
from taco.pipeline.presets import configs_from
from taco.pipeline.train import train
store, run, stop_at, config = sys.argv[1:5]
# the seeds this rank gives torch's global generator, in order
seeds, real_manual_seed = [], torch.manual_seed
torch.manual_seed = lambda seed: seeds.append(seed) or real_manual_seed(seed)
# beside the run folder, each rank leaves its process id and the summary of its training
Path(f"{run}.rank{os.environ['RANK']}.pid").write_text(str(os.getpid()))
if stop_at.startswith("resume"):  # "resume", or "resume-N" to stop at step N
    summary = train(store, run, resume=True, stop_at=int(stop_at[7:]) if stop_at[7:] else None, device="cpu",
                    progress=False)
else:
    summary = train(store, run, *configs_from(json.loads(open(config).read())), stop_at=int(stop_at), device="cpu",
                    progress=False)
Path(f"{run}.rank{os.environ['RANK']}.json").write_text(json.dumps(summary | {"seeds": seeds}))
"""


def torchrun(script_dir, store, run, stop_at, config):
    """Starts TORCHRUN_TRAIN with 2 CPU ranks; returns the torchrun process. (--standalone: a free port of its
    own, where a fixed one could still be held by the last launch or by another job on the machine.)"""
    script = script_dir / "torchrun_train.py"
    script.write_text(TORCHRUN_TRAIN)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(store), str(run), stop_at, str(config)]
    # the script imports this checkout's taco, whatever is installed
    env = os.environ | {"PYTHONPATH": str(Path(training.__file__).parents[2])}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def rank_summaries(run):
    return [json.loads(Path(f"{run}.rank{rank}.json").read_text()) for rank in range(2)]


def test_a_torchrun_run_in_pieces_equals_one_run_on_every_rank(small_store, micro_config, tmp_path):
    """Each rank draws its own dropout masks, so a resumed run must give each rank back its own random
    states: rank 0's on every rank would change what rank 1 draws."""

    def run_to_the_end(run, stop_at):
        process = torchrun(tmp_path, small_store, run, stop_at, micro_config)
        assert process.wait(timeout=300) == 0, process.stderr.read()[-3000:]

    run_to_the_end(tmp_path / "whole", "8")
    first, second = rank_summaries(tmp_path / "whole")
    assert second["seeds"][0] == first["seeds"][0] + 1  # each rank its own dropout masks
    run_to_the_end(tmp_path / "pieces", "4")
    run_to_the_end(tmp_path / "pieces", "resume")
    whole, pieces = weights(tmp_path / "whole", 8), weights(tmp_path / "pieces", 8)
    assert all(torch.equal(whole[name], pieces[name]) for name in whole)


def test_a_killed_torchrun_run_resumed_equals_one_run_on_every_rank(small_store, tmp_path):
    config = write_config(tmp_path / "long.json", max_steps=1000)  # one schedule for both runs
    whole = torchrun(tmp_path, small_store, tmp_path / "whole", "8", config)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()[-3000:]

    killed = torchrun(tmp_path, small_store, tmp_path / "killed", "1000", config)
    wait_for(tmp_path / "killed" / "checkpoints" / step_file(4))
    # both ranks and torchrun, with no chance to save anything (torchrun starts the ranks in sessions of their own)
    for rank in range(2):
        os.kill(int(Path(f"{tmp_path / 'killed'}.rank{rank}.pid").read_text()), signal.SIGKILL)
    killed.kill()
    killed.wait(timeout=60)
    resumed = torchrun(tmp_path, small_store, tmp_path / "killed", "resume-8", config)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]

    expected, got = weights(tmp_path / "whole", 8), weights(tmp_path / "killed", 8)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_a_signal_to_one_torchrun_rank_stops_every_rank_after_the_same_step(small_store, tmp_path):
    """The ranks agree on stopping (and on the validation loss, which each rank computes on its share of
    the split): a rank that stopped alone would leave the other waiting for it forever."""
    run = tmp_path / "run"
    process = torchrun(tmp_path, small_store, run, "1000", write_config(tmp_path / "long.json", max_steps=1000))
    wait_for(run / "checkpoints" / step_file(4))
    wait_for(Path(f"{run}.rank1.pid"))
    os.kill(int(Path(f"{run}.rank1.pid").read_text()), signal.SIGTERM)
    assert process.wait(timeout=120) == 0, process.stderr.read()[-3000:]

    first, second = rank_summaries(run)
    assert first["stopped_by"] == second["stopped_by"] == "signal"
    assert (first["signal"], second["signal"]) == (None, "SIGTERM")
    assert 4 <= first["steps"] == second["steps"] < 1000
    assert first["checkpoint"].endswith(step_file(first["steps"]))
    assert first["last_val_loss"] is not None and first["last_val_loss"] == second["last_val_loss"]


def test_ranks_validate_disjoint_shares_of_the_validation_split(small_store):
    store = FeatureStore(small_store)
    model_config, train_config = micro()
    shares = [[int(length) for batch in make_loaders(store, model_config, train_config, rank, 2)[2]
               for length in batch["mel_lens"]] for rank in range(2)]
    assert all(shares)
    assert sorted(shares[0] + shares[1]) == sorted(store.n_frames[store.split_indices("val")].tolist())
