"""Synthesis: Griffin-Lim, mel inversion, the NVIDIA log-mel export, and taco synth / inspect-alignment."""

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

from taco import cli
from taco.cli import main
from taco.features.mel import FeatureConfig, magnitude_stft, mel_filterbank, mel_spectrogram, normalize
from taco.pipeline import inspect as inspect_module, synth as synth_module
from taco.pipeline.alignment import VERDICTS
from taco.pipeline.checkpoint import load_checkpoint
from taco.pipeline.griffin_lim import griffin_lim, griffin_lim_lines, mel_to_magnitude, spectral_convergence
from taco.pipeline.synth import SynthConfig, Synthesizer, peak_normalize, to_log_mel

from conftest import signal_on_call, stop_after_one_step_per_token


def test_griffin_lim_rebuilds_a_speech_magnitude_with_spectral_convergence_below_0_1(speech):
    samples, _ = speech
    config = FeatureConfig()
    magnitude = magnitude_stft(torch.from_numpy(samples), config)
    wave = griffin_lim(magnitude, config, iterations=32)
    rebuilt = magnitude_stft(wave, config)[..., : magnitude.shape[-1]]
    # measured: 0.05 at 32 iterations, 0.64 with random phase alone
    assert spectral_convergence(magnitude, rebuilt) < 0.1


@pytest.mark.parametrize("normalization", ["db", "log"])
def test_a_line_vocoded_in_a_padded_batch_sounds_as_it_does_alone(speech, normalization):
    config = FeatureConfig(normalization=normalization)
    # float64: alone and batched do the same arithmetic on the line's numbers, but on arrays of other
    # sizes; in float32 the 32 iterations amplify that rounding to 2.4e-4 of the peak (measured), in
    # float64 to 1e-13, far below the 2e-2 (db) to 8e-2 (log) of the peak that leaking padding made
    feature = mel_spectrogram(torch.from_numpy(speech[0]), config).double()  # (n_mels, frames)
    # three lines cut mid-word, so that each ends loud, padded as inference pads: a normalized 0, which
    # denormalizes to -50 dB (db) or to a magnitude of 1 (log), neither of them silence
    frames = [120, 170, 260]
    padded = torch.zeros(len(frames), config.n_mels, max(frames) + 40, dtype=torch.float64)
    for row, n in enumerate(frames):
        padded[row, :, :n] = feature[:, :n]
    magnitudes = mel_to_magnitude(padded, config)
    alone = griffin_lim_lines(magnitudes, frames, config, each_alone=True, power=1.5)
    batched = griffin_lim_lines(magnitudes, frames, config, each_alone=False, power=1.5)
    for line_alone, line_batched in zip(alone, batched):
        torch.testing.assert_close(line_batched, line_alone, rtol=0, atol=1e-9 * line_alone.abs().max())


@pytest.mark.parametrize("normalization", ["db", "log"])
def test_mel_inversion_round_trips_through_the_filterbank(speech, normalization):
    config = FeatureConfig(normalization=normalization)
    feature = mel_spectrogram(torch.from_numpy(speech[0]), config)
    filters = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.f_min, config.f_max)
    error = (normalize(filters @ mel_to_magnitude(feature, config), normalization) - feature).abs()
    # exact but for the quietest bins, where the least-squares solution goes negative and is clamped
    assert error.mean() < 0.02 and error.flatten().quantile(0.99) < 0.4


def test_saved_mels_follow_the_nvidia_log_convention_from_either_normalization(speech):
    samples = torch.from_numpy(speech[0])
    log_reference = mel_spectrogram(samples, FeatureConfig(normalization="log")).numpy()
    from_db = to_log_mel(mel_spectrogram(samples, FeatureConfig(normalization="db")).T.numpy(), "db")
    assert from_db.shape == log_reference.shape  # (n_mels, frames)
    # db clips at +20 dB (magnitude 10), above the loudest bins of speech: the two agree everywhere, the
    # harmonics above 0 dB included, which a 0 dB top flattened
    assert log_reference.max() > 0
    np.testing.assert_allclose(from_db, log_reference, atol=1e-4)


def test_batched_synthesis_keeps_the_order_and_cuts_each_item_to_its_own_length(micro_checkpoint):
    synthesizer = Synthesizer(micro_checkpoint, "cpu")
    stop_after_one_step_per_token(synthesizer.model)  # each line stops after as many steps as it has tokens
    r = synthesizer.model_config.reduction_factor
    texts = ["A short line.", "A much longer line of text to speak, with numbers like 42.", "Mid length one."]
    config = SynthConfig(batch_size=2, max_decoder_steps=200, griffin_lim_iterations=2)
    utterances = synthesizer.synthesize(texts, config)
    assert [u.text for u in utterances] == texts
    assert len({len(u.tokens) for u in utterances}) == 3
    for utterance in utterances:
        # its own stop, not its batch's longest
        assert len(utterance.mel) == len(utterance.tokens) * r and not utterance.hit_step_limit
        assert utterance.alignment.shape == (len(utterance.tokens), len(utterance.tokens))
        assert utterance.gate.shape == (len(utterance.tokens),)
        assert len(utterance.wave) == (len(utterance.mel) - 1) * synthesizer.feature_config.hop_length


def test_on_a_cpu_each_line_is_vocoded_alone_from_its_own_mel(micro_checkpoint):
    synthesizer = Synthesizer(micro_checkpoint, "cpu")
    config = SynthConfig(batch_size=3, max_decoder_steps=20, griffin_lim_iterations=2)
    texts = ["A short line.", "A much longer line of text to speak, with numbers like 42.", "Mid length one."]
    features = synthesizer.feature_config
    for utterance in synthesizer.synthesize(texts, config):
        # (frames, n_mels) -> (n_mels, frames) -> (n_freqs, frames)
        magnitude = mel_to_magnitude(torch.from_numpy(utterance.mel).T, features)
        alone = griffin_lim(magnitude, features, config.griffin_lim_iterations, power=config.power, seed=config.seed)
        np.testing.assert_allclose(utterance.wave, peak_normalize(alone.numpy()), atol=1e-6)


def test_int8_gives_the_decoder_lstms_8_bit_weights_and_nearly_the_same_mels(micro_checkpoint):
    texts = ["A short line.", "Mid length one."]
    config = SynthConfig(max_decoder_steps=6)
    float32 = Synthesizer(micro_checkpoint, "cpu").synthesize(texts, config, vocode=False)
    int8 = Synthesizer(micro_checkpoint, "cpu", int8=True)
    for cell in (int8.model.decoder.attention_rnn, int8.model.decoder.decoder_rnn):
        assert isinstance(cell, torch.ao.nn.quantized.dynamic.LSTMCell)
    for exact, quantized in zip(float32, int8.synthesize(texts, config, vocode=False)):
        # the same dropout masks (same seed): only the weights' rounding differs, over 6 autoregressive steps.
        # Measured: 0.2% of the mels' mean magnitude; another seed's dropout moves them by 1.3-2.5%
        n = min(len(exact.mel), len(quantized.mel))
        assert np.abs(exact.mel[:n] - quantized.mel[:n]).mean() < 0.01 * np.abs(exact.mel[:n]).mean()


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_synth_int8_writes_its_wav_from_8_bit_lstms(micro_checkpoint, tmp_path, monkeypatch):
    quantized = []
    real_quantize = synth_module.int8_decoder_lstms
    monkeypatch.setattr(synth_module, "int8_decoder_lstms", lambda model: (quantized.append(model), real_quantize(model)))
    out = tmp_path / "int8.wav"
    result = invoke("synth", micro_checkpoint, "Hello world.", "-o", out, "--int8", "--gl-iters", "2",
                    "--max-decoder-steps", "8", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert len(quantized) == 1
    assert len(soundfile.read(out)[0]) > 0


def test_int8_runs_on_the_cpu_unless_told_otherwise_and_refuses_a_gpu_before_loading(micro_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, where the default is CUDA
    assert Synthesizer(micro_checkpoint, int8=True).device == torch.device("cpu")
    with pytest.raises(ValueError, match="int8 inference runs on the CPU, not on cuda"):
        Synthesizer("no-such-checkpoint.pt", "cuda", int8=True)


def test_synth_writes_a_16_bit_wav_whose_length_matches_its_mel(micro_checkpoint, tmp_path):
    out = tmp_path / "hello.wav"
    result = invoke("synth", micro_checkpoint, "Hello world.", "-o", out, "--save-mel", "--gl-iters", "4")
    assert result.exit_code == 0, result.output
    info = soundfile.info(out)
    checkpoint = load_checkpoint(micro_checkpoint)
    assert info.samplerate == checkpoint["feature_config"]["sample_rate"] and info.subtype == "PCM_16"
    mel = np.load(out.with_suffix(".npy"))
    hop = checkpoint["feature_config"]["hop_length"]
    assert mel.shape[0] == checkpoint["feature_config"]["n_mels"]
    assert info.frames == (mel.shape[1] - 1) * hop
    limit = checkpoint["model_config"]["max_decoder_steps"] * checkpoint["model_config"]["reduction_factor"]
    assert 0 < mel.shape[1] <= limit


def test_synth_warns_by_name_when_an_item_reaches_the_step_limit(micro_checkpoint, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("first line\n\nsecond line, with # odd @ characters\n")
    result = invoke("synth", micro_checkpoint, "--text-file", lines, "--out-dir", tmp_path / "out",
                    "--max-decoder-steps", "2", "--gl-iters", "1", "--quiet")
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0001.wav", "0002.wav"]
    assert "0001.wav: reached the decoder step limit" in result.output
    assert "0002.wav: cannot speak '#' x1, '@' x1" in result.output


def test_synth_refuses_text_with_nothing_to_say(micro_checkpoint):
    result = invoke("synth", micro_checkpoint, "###")
    assert result.exit_code == 1 and "nothing the model can speak" in result.output


def with_frame_bias(checkpoint_path, bias, path):
    """A copy of a checkpoint whose decoder adds `bias` to every mel bin of every frame it predicts."""
    checkpoint = load_checkpoint(checkpoint_path)
    checkpoint["model"]["decoder.frame_projection.bias"].fill_(bias)
    torch.save(checkpoint, path)
    return path


def test_synth_refuses_a_non_finite_mel_naming_the_line_and_writes_nothing(micro_checkpoint, tmp_path):
    broken = with_frame_bias(micro_checkpoint, float("nan"), tmp_path / "broken.pt")
    lines = tmp_path / "lines.txt"
    lines.write_text("A first line.\nA second line.\n")
    result = invoke("synth", broken, "--text-file", lines, "--out-dir", tmp_path / "out", "--gl-iters", "1")
    assert result.exit_code == 1 and "text 1 ('A first line.'): the model's mel is NaN/inf" in result.output
    assert list((tmp_path / "out").iterdir()) == []


def test_synth_refuses_a_power_that_overflows_griffin_lim(micro_checkpoint, tmp_path):
    # mels at the top of the db range: magnitudes near 10, and 10 ** 100 overflows float32
    loud = with_frame_bias(micro_checkpoint, 4.0, tmp_path / "loud.pt")
    out = tmp_path / "loud.wav"
    result = invoke("synth", loud, "Hello.", "-o", out, "--power", "100", "--gl-iters", "1")
    assert result.exit_code == 1 and "text 1 ('Hello.'): Griffin-Lim's waveform is NaN/inf" in result.output
    assert not out.exists()


def test_inspect_split_ranks_utterances_worst_first_and_plots_the_worst(micro_checkpoint, small_store, tmp_path):
    out = tmp_path / "report"
    result = invoke("inspect-alignment", micro_checkpoint, "--store", small_store, "--split", "train",
                    "--limit", "4", "--worst", "2", "-o", out, "--max-decoder-steps", "30")
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "scores.json").read_text())
    assert [row["rank"] for row in scores] == [1, 2, 3, 4]
    # worst first: verdicts in VERDICTS' order, then the lower focus rate
    keys = [(VERDICTS.index(row["verdict"]), row["scores"]["focus_rate"]) for row in scores]
    assert keys == sorted(keys)
    assert {"focus_rate", "coverage", "monotonicity", "skipped_spans", "repeated_spans", "stopped", "verdict"} <= set(scores[0]["scores"])
    assert scores[0]["teacher_forced"]["verdict"] in {"ok", "diffuse", "skips", "repeats"}
    assert len((out / "report.tsv").read_text().splitlines()) == 5
    assert sorted(p.name for p in out.glob("*.png")) == [f"001_{scores[0]['id']}.png", f"002_{scores[1]['id']}.png"]
    assert "verdicts:" in result.output


def test_inspect_free_text_and_stored_ids(micro_checkpoint, small_store, tmp_path):
    text = invoke("inspect-alignment", micro_checkpoint, "--text", "Hello there.", "-o", tmp_path / "t", "--json",
                  "--max-decoder-steps", "10")
    assert text.exit_code == 0, text.output
    [row] = json.loads(text.output)
    assert row["id"] == "text001" and row["text"] == "Hello there."
    assert (tmp_path / "t" / "001_text001.png").exists()
    missing = invoke("inspect-alignment", micro_checkpoint, "--store", small_store, "--id", "nope", "-o", tmp_path / "m")
    assert missing.exit_code == 1 and "no utterance nope" in missing.output


def test_a_stopped_synth_keeps_the_wavs_it_wrote_and_exits_with_the_signals_status(micro_checkpoint, tmp_path,
                                                                                   monkeypatch):
    lines = tmp_path / "lines.txt"
    lines.write_text("One.\nTwo, two.\nThree, three, three.\n")
    out = tmp_path / "out"
    write = signal_on_call(cli.write_wav, 2, signal.SIGTERM)
    monkeypatch.setattr(cli, "write_wav", write)
    result = invoke("synth", micro_checkpoint, "--text-file", lines, "--out-dir", out, "--batch-size", "1",
                    "--gl-iters", "1", "--max-decoder-steps", "20")
    assert result.exit_code == 143, result.output
    assert (f"interrupted by SIGTERM; 1 of the 3 wavs were written to {out} before it; --skip-existing finishes "
            "the rest") in result.output
    first_written = write.calls[0][0]
    assert [path.name for path in out.iterdir()] == [first_written.name]
    assert f"{first_written}  " in result.output and "Traceback" not in result.output


def test_skip_existing_finishes_a_stopped_run_without_touching_the_wavs_already_there(micro_checkpoint, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("One.\nTwo, two.\nThree, three, three.\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "0002.wav").write_bytes(b"written by the stopped run")
    args = ("synth", micro_checkpoint, "--text-file", lines, "--out-dir", out, "--gl-iters", "1",
            "--max-decoder-steps", "20", "--skip-existing")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert (out / "0002.wav").read_bytes() == b"written by the stopped run"
    assert f"{out / '0001.wav'}  " in result.output and f"{out / '0003.wav'}  " in result.output
    assert "0002.wav" not in result.output
    assert invoke(*args).output.strip() == f"all 3 wavs are there already ({out}); nothing to synthesize"


def test_synthesizing_some_positions_numbers_each_line_by_its_place_in_the_whole(micro_checkpoint, monkeypatch):
    synthesizer = Synthesizer(micro_checkpoint, "cpu")
    texts = ["One.", "Two, two.", "Three, three, three."]
    config = SynthConfig(max_decoder_steps=5)
    assert [i for i, _ in synthesizer.synthesize_each(texts, config, vocode=False, positions=[2, 0])] in ([2, 0], [0, 2])

    def refuse(number, utterance, vocoder):
        raise synth_module.SynthesisError(f"text {number}")

    monkeypatch.setattr(synth_module, "_refuse_nonfinite", refuse)
    with pytest.raises(synth_module.SynthesisError, match="text 3"):
        next(synthesizer.synthesize_each(texts, config, vocode=False, positions=[2]))


def test_a_late_error_in_synth_keeps_the_lines_finished_before_it(micro_checkpoint, tmp_path, monkeypatch):
    lines = tmp_path / "lines.txt"
    lines.write_text("One.\nTwo, two.\nThree, three, three.\n")
    out = tmp_path / "out"

    def refuse_the_second(number, utterance, vocoder):
        refused.append(number)
        if len(refused) == 2:
            raise synth_module.SynthesisError(f"text {number}: broken")

    refused = []
    monkeypatch.setattr(synth_module, "_refuse_nonfinite", refuse_the_second)
    result = invoke("synth", micro_checkpoint, "--text-file", lines, "--out-dir", out, "--batch-size", "1",
                    "--gl-iters", "1", "--max-decoder-steps", "20")
    assert result.exit_code == 1
    assert f"Error: text {refused[1]}: broken; 1 of the 3 wavs were written to {out} before it" in result.output
    assert [path.name for path in out.iterdir()] == [f"{refused[0]:04d}.wav"]


def test_a_wav_is_complete_or_absent_when_writing_it_is_stopped(tmp_path, monkeypatch):
    def write_half_then_stop(file, *args, **kwargs):
        Path(file).write_bytes(b"RIFF")
        raise KeyboardInterrupt

    monkeypatch.setattr(synth_module.soundfile, "write", write_half_then_stop)
    with pytest.raises(KeyboardInterrupt):
        synth_module.write_wav(tmp_path / "line.wav", np.zeros(100, np.float32), 22050)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_inspection_writes_the_report_of_the_utterances_done(micro_checkpoint, small_store, tmp_path,
                                                                      monkeypatch, signum, status):
    out = tmp_path / "report"
    monkeypatch.setattr(inspect_module, "inference_item", signal_on_call(inspect_module.inference_item, 3, signum))
    result = invoke("inspect-alignment", micro_checkpoint, "--store", small_store, "--split", "train", "--limit", "4",
                    "--batch-size", "1", "-o", out, "--max-decoder-steps", "30")
    assert result.exit_code == status, result.output
    assert result.output.splitlines()[-1] == (f"interrupted by {signum.name}; the report in {out} covers the 2 of 4 "
                                              "utterances inspected before it (0 plotted)")
    scores = json.loads((out / "scores.json").read_text())
    assert [row["rank"] for row in scores] == [1, 2]
    keys = [(VERDICTS.index(row["verdict"]), row["scores"]["focus_rate"]) for row in scores]
    assert keys == sorted(keys)
    assert len((out / "report.tsv").read_text().splitlines()) == 3
    assert list(out.glob("*.png")) == [] and list(out.glob(".*")) == []


def test_an_inspection_stopped_while_plotting_keeps_its_report_and_the_plots_drawn(micro_checkpoint, small_store,
                                                                                  tmp_path, monkeypatch):
    out = tmp_path / "report"
    monkeypatch.setattr(inspect_module, "save_figure", signal_on_call(inspect_module.save_figure, 2, signal.SIGTERM))
    result = invoke("inspect-alignment", micro_checkpoint, "--store", small_store, "--split", "train", "--limit", "3",
                    "--worst", "3", "-o", out, "--max-decoder-steps", "30")
    assert result.exit_code == 143, result.output
    assert "covers the 3 of 3 utterances inspected before it (1 plotted)" in result.output
    scores = json.loads((out / "scores.json").read_text())
    assert [row.get("plot") for row in scores] == [f"001_{scores[0]['id']}.png", None, None]
    assert [path.name for path in out.glob("*.png")] == [scores[0]["plot"]]
