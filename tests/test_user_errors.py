"""Inputs that train and synth cannot use are refused in one line that names the file and the reason,
never with a traceback; the edge cases they can still serve are served with a warning."""

import errno
import json
import shutil

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

from conftest import MICRO
from taco.cli import main
from taco.pipeline.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from taco.pipeline.synth import peak_normalize


def invoke(*args):
    # catch_exceptions=False: a traceback fails the test instead of passing for exit code 1
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line(result, *parts):
    assert result.exit_code != 0 and result.output.count("\n") == 1, result.output
    for part in parts:
        assert part in result.output


def changed_checkpoint(micro_checkpoint, path, change):
    checkpoint = load_checkpoint(micro_checkpoint)
    change(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_train_into_a_path_below_a_file(small_store, tmp_path):
    (tmp_path / "file").write_text("")
    result = invoke("train", small_store, tmp_path / "file" / "run", "--device", "cpu", "--quiet")
    assert_one_line(result, "Not a directory", str(tmp_path / "file"))


def test_a_checkpoint_save_on_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full_disk(checkpoint, file):
        file.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="step_00000001.pt: cannot write it .*No space left on device"):
        save_checkpoint(tmp_path / "step_00000001.pt", {"model": {"weight": torch.ones(1)}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field, value, expected", [
    ("max_steps", "100", "TrainConfig.max_steps must be int, got '100'"),
    ("batch_frames", [4000], "TrainConfig.batch_frames must be int | None, got [4000]"),
    ("learning_rate", True, "TrainConfig.learning_rate must be float, got True"),
    # values that would fail later without the file's name, or train wrongly
    ("grad_clip", -1.0, "TrainConfig.grad_clip must be positive, got -1.0"),
    ("guided_attention_sigma", 0.0, "TrainConfig.guided_attention_sigma must be positive, got 0.0"),
    ("num_workers", -1, "TrainConfig.num_workers must be >= 0, got -1"),
    ("batch_frames", 0, "TrainConfig.batch_frames must be positive, got 0"),
])
def test_train_refuses_a_config_value_of_the_wrong_json_type(small_store, tmp_path, field, value, expected):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"training": {field: value}}))
    result = invoke("train", small_store, tmp_path / "run", "--config", config, "--device", "cpu", "--quiet")
    assert_one_line(result, f"{config}: {expected}")


def test_configs_from_another_taco_version_are_refused_naming_the_file(small_store, micro_checkpoint, tmp_path):
    newer = changed_checkpoint(micro_checkpoint, tmp_path / "newer.pt",
                               lambda checkpoint: checkpoint["model_config"].update(flow_steps=4))
    assert_one_line(invoke("synth", newer, "Hello.", "-o", tmp_path / "hello.wav"),
                    f"{newer}: unknown ModelConfig fields: ['flow_steps'] (made by another taco version?)")
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    info = json.loads((store / "store.json").read_text())
    info["text_config"]["symbols_version"] = 99
    (store / "store.json").write_text(json.dumps(info))
    result = invoke("train", store, tmp_path / "run", "--device", "cpu", "--quiet")
    assert_one_line(result, f"{store / 'store.json'}: ", "(made by another taco version?)")


def test_resuming_with_another_number_of_processes_says_how_many_the_run_had(small_store, micro_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_run[0], run)
    newest = run / "checkpoints" / "step_00000008.pt"
    changed_checkpoint(newest, newest, lambda checkpoint: checkpoint["sampler"].update(world_size=2))
    result = invoke("train", small_store, run, "--resume", "--device", "cpu", "--quiet")
    assert_one_line(result, f"{newest}: saved by a run of 2 processes, resumed by 1",
                    "torchrun --nproc_per_node 2")


def test_utterances_longer_than_a_batch_are_refused_with_the_two_ways_out(small_store, tmp_path):
    result = invoke("train", small_store, tmp_path / "run", "--batch-frames", "10", "--device", "cpu", "--quiet")
    assert_one_line(result, f"{small_store}: ", "utterances are longer than a batch of batch_frames=10 frames",
                    "raise --batch-frames, or preprocess again with a lower --max-seconds")


def test_a_config_naming_its_preset_by_anything_but_a_string_is_refused(small_store, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": ["tiny"]}))
    result = invoke("train", small_store, tmp_path / "run", "--config", config, "--device", "cpu", "--quiet")
    assert_one_line(result, f"{config}: unknown preset ['tiny']")


def test_text_that_is_not_utf_8_is_refused_naming_the_file(small_store, micro_checkpoint, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_bytes("Caf\u00e9 au lait.\n".encode("cp1252"))
    result = invoke("synth", micro_checkpoint, "--text-file", lines, "--out-dir", tmp_path / "out")
    assert_one_line(result, f"{lines}: not UTF-8 text (byte 3: invalid continuation byte); save it as UTF-8")
    config = tmp_path / "config.json"
    config.write_bytes(b"\x80\x02 a checkpoint given by mistake")
    result = invoke("train", small_store, tmp_path / "run", "--config", config, "--device", "cpu", "--quiet")
    assert_one_line(result, f"{config}: not UTF-8 text (byte 0: invalid start byte)")


def test_an_unknown_device_is_refused_by_train_and_synth(small_store, micro_checkpoint, tmp_path):
    trained = invoke("train", small_store, tmp_path / "run", "--device", "gpu", "--quiet")
    assert_one_line(trained, "unknown device 'gpu'")
    spoken = invoke("synth", micro_checkpoint, "Hello.", "-o", tmp_path / "hello.wav", "--device", "gpu")
    assert_one_line(spoken, "unknown device 'gpu'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_synth_on_cuda_without_cuda_is_refused(micro_checkpoint, tmp_path):
    result = invoke("synth", micro_checkpoint, "Hello.", "-o", tmp_path / "hello.wav", "--device", "cuda")
    assert_one_line(result, "device 'cuda' asked for, but this torch sees no CUDA device")


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused(micro_checkpoint, tmp_path):
    misfit = changed_checkpoint(micro_checkpoint, tmp_path / "misfit.pt",
                                lambda checkpoint: checkpoint["model_config"].update(decoder_rnn_dim=64))
    result = invoke("synth", misfit, "Hello.", "-o", tmp_path / "hello.wav")
    assert_one_line(result, f"{misfit}: its weights do not fit its model config", "decoder.")


@pytest.mark.parametrize("name", ["hello.ogg", "hello.txt", "hello"])
def test_synth_refuses_an_output_format_libsndfile_cannot_write_before_synthesizing(micro_checkpoint, tmp_path,
                                                                                    monkeypatch, name):
    monkeypatch.setattr("taco.pipeline.synth.Synthesizer.synthesize_each", lambda *args, **kwargs: pytest.fail("synthesized"))
    result = invoke("synth", micro_checkpoint, "Hello.", "-o", tmp_path / name)
    assert_one_line(result, f"{tmp_path / name}: libsndfile cannot write 16-bit PCM")


def test_synth_refuses_an_output_below_a_file_before_synthesizing(micro_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr("taco.pipeline.synth.Synthesizer.synthesize_each", lambda *args, **kwargs: pytest.fail("synthesized"))
    result = invoke("synth", micro_checkpoint, "Hello.", "-o", tmp_path / "file" / "hello.wav")
    assert_one_line(result, f"{tmp_path / 'file'}: is a file, not a folder")


def test_synth_refuses_a_text_file_with_no_lines_to_speak(micro_checkpoint, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("\n   \n")
    assert_one_line(invoke("synth", micro_checkpoint, "--text-file", lines), f"{lines}: no lines to speak")


def test_synth_reads_its_lines_from_standard_input_given_as_dash(micro_checkpoint, tmp_path):
    def synth_stdin(data: bytes):
        return CliRunner().invoke(main, ["synth", str(micro_checkpoint), "--text-file", "-", "--out-dir",
                                         str(tmp_path / "out"), "--gl-iters", "1", "--max-decoder-steps", "10"],
                                  input=data, catch_exceptions=False)

    result = synth_stdin("One.\n\nTwo, two.\n".encode())
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["0001.wav", "0002.wav"]
    assert_one_line(synth_stdin(b"\n"), "standard input: no lines to speak")
    assert_one_line(synth_stdin("Caf\u00e9.\n".encode("cp1252")), "standard input: not UTF-8 text (byte 3")


def test_a_gate_that_fires_at_once_gives_a_short_wav_and_a_warning(micro_checkpoint, tmp_path):
    hasty = changed_checkpoint(micro_checkpoint, tmp_path / "hasty.pt",
                               lambda checkpoint: checkpoint["model"]["decoder.gate_layer.bias"].fill_(50.0))
    out = tmp_path / "hello.wav"
    result = invoke("synth", hasty, "Hello.", "-o", out, "--gl-iters", "1")
    assert result.exit_code == 0, result.output
    reduction_factor = MICRO["model"]["reduction_factor"]
    assert f"hello.wav: the gate stopped after {reduction_factor} frames" in result.output
    assert soundfile.info(out).frames == (reduction_factor - 1) * 256


def test_a_wave_of_no_samples_normalizes_to_no_samples():
    # one frame (a gate that fires at once at reduction factor 1) gives Griffin-Lim no samples
    assert peak_normalize(np.zeros(0, np.float32)).shape == (0,)


def test_a_store_without_a_validation_split_trains_with_a_warning_saying_what_is_lost(make_corpus, tmp_path):
    from taco.features.preprocess import preprocess

    store = tmp_path / "store"
    preprocess(make_corpus(3), store, val_count=0, jobs=1, progress=False)
    config = tmp_path / "micro.json"
    config.write_text(json.dumps(MICRO | {"training": MICRO["training"] | {"max_steps": 2}}))
    result = invoke("train", store, tmp_path / "run", "--config", config, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert f"warning: {store}: no validation split: no validation loss, no best.pt" in result.output
