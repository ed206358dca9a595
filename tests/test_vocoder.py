"""The HiFi-GAN vocoder: the public checkpoints' layout, loading, weight-norm folding, batching, the feature
check, and `taco synth --vocoder` / `taco vocode`."""

import copy
import dataclasses
import json
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

from taco.cli import main
from taco.features.mel import FeatureConfig, log_mel, mel_spectrogram
from taco.pipeline.hifigan import Generator, HiFiGANConfig, fold_weight_norm, right_context_frames
from taco.pipeline.synth import SynthConfig, Synthesizer
from taco.pipeline.vocoder import FRAME_BUCKET, GPU_BATCH_SIZE, Vocoder, VocoderError, load_generator

from conftest import signal_on_call

# Names and shapes of the public V1, V2 and V3 generators, written by scripts/hifigan_manifest.py from the
# reference's own code and configs (github.com/jik876/hifi-gan).
MANIFEST = json.loads((Path(__file__).parent / "data" / "hifigan_generators.json").read_text())
# Small generators of taco's default mel (hop 256), one of each residual block type.
SMALL = {
    "1": HiFiGANConfig(resblock="1", upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 16, 8),
                       upsample_initial_channel=32, resblock_kernel_sizes=(3, 7),
                       resblock_dilation_sizes=((1, 3, 5), (1, 3, 5))),
    "2": HiFiGANConfig(resblock="2", upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 16, 8),
                       upsample_initial_channel=32, resblock_kernel_sizes=(3, 5),
                       resblock_dilation_sizes=((1, 2), (2, 6))),
}


def with_weight_norm(generator: Generator) -> Generator:
    """`generator` with torch.nn.utils.weight_norm on every convolution, as the reference trains and saves it,
    and magnitudes g that are not the norms of v (a fresh weight norm starts with g = ||v||, which folds
    trivially)."""
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the reference's (deprecated) weight norm, on purpose
        for module in generator.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                torch.nn.utils.weight_norm(module)
                with torch.no_grad():
                    module.weight_g.mul_(torch.rand_like(module.weight_g) + 0.5)
    return generator


def save_reference_file(directory: Path, generator: Generator, legacy: bool = False) -> Path:
    """`{"generator": state_dict}` and config.json in `directory`, as the public checkpoints ship."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "generator"
    torch.save({"generator": generator.state_dict()}, path, _use_new_zipfile_serialization=not legacy)
    config = generator.config.to_dict() | {"batch_size": 16, "learning_rate": 0.0002, "num_freq": 1025}
    (directory / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def speech_log_mel(speech) -> torch.Tensor:
    """(n_mels, frames) natural-log mel of real speech."""
    return mel_spectrogram(torch.from_numpy(speech[0]), FeatureConfig(normalization="log"))


def small_vocoder(resblock: str = "2") -> Vocoder:
    torch.manual_seed(0)
    return Vocoder(Generator(SMALL[resblock]).eval(), "cpu")


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_a_generator_built_from_each_public_config_has_the_public_names_and_shapes(version):
    config = HiFiGANConfig.from_reference(MANIFEST[version]["config"])
    state = with_weight_norm(Generator(config)).state_dict()
    assert {name: list(tensor.shape) for name, tensor in state.items()} == MANIFEST[version]["parameters"]


@pytest.mark.parametrize("resblock", ["1", "2"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_file_in_the_reference_layout_loads_and_speaks_as_the_weight_normed_generator(tmp_path, speech_log_mel,
                                                                                      resblock, legacy):
    torch.manual_seed(0)
    normed = with_weight_norm(Generator(SMALL[resblock])).eval()
    path = save_reference_file(tmp_path / "LJ_V9", normed, legacy)
    vocoder = Vocoder.from_file(path, device="cpu")
    assert not any("weight_g" in name for name in vocoder.generator.state_dict())  # folded: plain convolutions
    mel = speech_log_mel[None, :, :60]
    with torch.no_grad():
        expected = normed(mel)[0]
        folded = vocoder.generator(mel)[0]
    assert expected.abs().max() > 0.1  # a signal, not a near-silent output that anything would match
    torch.testing.assert_close(folded, expected, rtol=0, atol=1e-5)


def test_folding_the_weight_norm_of_torch_parametrizations_matches_the_module(speech_log_mel):
    torch.manual_seed(0)
    generator = Generator(SMALL["1"]).eval()
    for module in generator.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            torch.nn.utils.parametrizations.weight_norm(module)
            with torch.no_grad():
                module.parametrizations.weight.original0.mul_(1.7)
    plain = Generator(SMALL["1"]).eval()
    plain.load_state_dict(fold_weight_norm(generator.state_dict()))
    mel = speech_log_mel[None, :, :40]
    with torch.no_grad():
        torch.testing.assert_close(plain(mel), generator(mel), rtol=0, atol=1e-5)


def test_a_generator_gives_hop_samples_per_frame_and_batched_equals_one_by_one(speech_log_mel):
    vocoder = small_vocoder()
    mels = [speech_log_mel[:, start : start + n].numpy() for start, n in [(0, 37), (50, 9), (100, 64), (30, 20)]]
    batched = vocoder.vocode_each(mels, batch_size=4)
    alone = [vocoder.vocode_each([mel], batch_size=1)[0] for mel in mels]
    for mel, wave, single in zip(mels, batched, alone):
        assert len(wave) == len(single) == mel.shape[1] * vocoder.config.hop_size
        assert np.abs(single).max() > 0.1
        np.testing.assert_allclose(wave, single, rtol=0, atol=1e-5)


def test_unless_told_a_vocoder_takes_one_mel_at_a_time_on_the_cpu_and_batches_on_a_gpu(speech_log_mel, monkeypatch):
    """On a CPU one at a time was 3-5x faster than a padded batch (README); a GPU wants batches."""
    vocoder = small_vocoder()
    sizes = []
    real_vocode = vocoder.vocode
    monkeypatch.setattr(vocoder, "vocode", lambda mels, frames: sizes.append(len(frames)) or real_vocode(mels, frames))
    vocoder.vocode_each([speech_log_mel[:, :n].numpy() for n in (12, 30, 7)])
    assert sizes == [1, 1, 1]
    monkeypatch.setattr(vocoder, "device", torch.device("cuda"))
    assert vocoder.batch_size == GPU_BATCH_SIZE == 16


def test_mels_of_similar_lengths_reach_the_generator_in_one_shape(speech_log_mel, monkeypatch):
    """oneDNN builds its convolutions anew for each new input shape, which costs as much as vocoding seconds of
    audio: a mel is padded with silence to a multiple of FRAME_BUCKET frames, past its tail."""
    vocoder = small_vocoder()
    lengths = []
    real_forward = vocoder.generator.forward
    monkeypatch.setattr(vocoder.generator, "forward", lambda mel: lengths.append(mel.shape[-1]) or real_forward(mel))
    frames = [FRAME_BUCKET - vocoder.tail - 20, FRAME_BUCKET - vocoder.tail, FRAME_BUCKET - vocoder.tail + 1]
    waves = vocoder.vocode_each([speech_log_mel[:, :n].numpy() for n in frames])
    assert lengths == [FRAME_BUCKET, FRAME_BUCKET, 2 * FRAME_BUCKET]
    assert [len(wave) for wave in waves] == [n * vocoder.config.hop_size for n in frames]


def test_a_mel_hears_silence_after_its_end_which_reaches_only_its_last_frames(speech_log_mel):
    vocoder = small_vocoder("1")
    frames, hop, tail = 50, vocoder.config.hop_size, vocoder.tail
    mel = speech_log_mel[None, :, :frames]
    [wave] = vocoder.vocode(mel, [frames])
    with torch.no_grad():
        zero_padded = vocoder.generator(mel)[0].numpy()  # what the reference computes: its convolutions pad zeros
    # the end differs (it hears silence, not a loud log-mel of 0), which is why a batch pads with silence ...
    assert np.abs(wave[-hop:] - zero_padded[-hop:]).max() > 1e-3
    # ... and the samples more than `tail` frames before the end do not hear it at all
    np.testing.assert_allclose(wave[: (frames - tail) * hop], zero_padded[: (frames - tail) * hop], rtol=0, atol=1e-6)


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_no_output_sample_depends_on_frames_past_the_right_context(version, speech_log_mel):
    config = dataclasses.replace(HiFiGANConfig.from_reference(MANIFEST[version]["config"]), upsample_initial_channel=32)
    torch.manual_seed(0)
    generator = Generator(config).eval()
    frames, tail = 20, right_context_frames(config)
    mel = speech_log_mel[None, :, : frames + tail + 5].clone()
    changed = mel.clone()
    changed[..., frames + tail :] += 5.0
    with torch.no_grad():
        kept = slice(0, frames * config.hop_size)
        torch.testing.assert_close(generator(changed)[0, kept], generator(mel)[0, kept], rtol=0, atol=1e-6)
        # within reach, the bound is not vacuous: frames up to 12 past the last reach its last samples (measured;
        # the bound is 14 for V1, 12 for V3), so 3 frames short of the bound the kept samples change, if faintly
        changed[..., frames + tail - 3 :] += 5.0
        assert (generator(changed)[0, kept] - generator(mel)[0, kept]).abs().max() > 0


def test_a_db_store_speaks_as_a_log_store_of_the_same_audio(micro_checkpoint, speech):
    vocoder = small_vocoder()
    synthesizer = Synthesizer(micro_checkpoint, "cpu", vocoder)
    assert synthesizer.feature_config.normalization == "db"
    samples = torch.from_numpy(speech[0])
    db = mel_spectrogram(samples, synthesizer.feature_config)  # (n_mels, frames)
    log = mel_spectrogram(samples, dataclasses.replace(synthesizer.feature_config, normalization="log"))
    frames = db.shape[1]
    # the synthesizer gets the model's (B, T, n_mels) normalized mels
    [from_db] = synthesizer.vocode(db.T[None], [frames], SynthConfig())
    [from_log] = vocoder.vocode(log[None], [frames])
    np.testing.assert_allclose(log_mel(db, "db").numpy(), log.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(from_db, from_log, rtol=0, atol=1e-5)


def test_a_checkpoint_whose_mels_differ_from_the_vocoders_is_refused(micro_checkpoint):
    config = dataclasses.replace(SMALL["2"], sampling_rate=16000, fmax=7600)
    with pytest.raises(VocoderError, match=r"sample_rate 22050 \(the vocoder's: 16000\), f_max 8000.0 \(the vocoder's: 7600"):
        Synthesizer(micro_checkpoint, "cpu", Vocoder(Generator(config), "cpu"))


def test_half_precision_on_the_cpu_is_bfloat16_close_to_float32_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    torch.manual_seed(0)
    generator = Generator(SMALL["1"])
    full = Vocoder(copy.deepcopy(generator), "cpu")
    half = Vocoder(generator, "cpu", half=True)
    assert half.dtype == torch.bfloat16
    mel = torch.randn(1, SMALL["1"].num_mels, 12) - 5
    [expected], [actual] = full.vocode(mel, [12]), half.vocode(mel, [12])
    assert actual.dtype == np.float32
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) < 1e-2


def test_half_precision_on_a_cpu_without_bfloat16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(VocoderError, match="half precision on the CPU needs native bfloat16"):
        Vocoder(Generator(SMALL["2"]), "cpu", half=True)


def test_a_generator_of_another_config_is_refused_by_the_tensor_that_differs(tmp_path):
    path = save_reference_file(tmp_path / "v", with_weight_norm(Generator(SMALL["2"])))
    with pytest.raises(VocoderError, match=r"generator: conv_pre.weight is \(32, 80, 7\) in the file, \(16, 80, 7\) in its config"):
        load_generator(path, dataclasses.replace(SMALL["2"], upsample_initial_channel=16))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def generator_file(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_reference_file(tmp_path / "LJ_V9", with_weight_norm(Generator(SMALL["2"])), legacy=True)


def test_synth_speaks_through_the_vocoder_with_hop_samples_per_frame(micro_checkpoint, generator_file, tmp_path):
    out = tmp_path / "hello.wav"
    result = invoke("synth", micro_checkpoint, "Hello world.", "-o", out, "--vocoder", generator_file, "--save-mel")
    assert result.exit_code == 0, result.output
    info = soundfile.info(out)
    mel = np.load(out.with_suffix(".npy"))
    assert info.samplerate == 22050 and info.subtype == "PCM_16"
    assert info.frames == mel.shape[1] * 256


def test_vocode_writes_one_wav_per_mel_named_after_it_at_its_own_length(generator_file, speech_log_mel, tmp_path):
    lengths = {"short": 11, "long": 70}
    for name, n in lengths.items():
        np.save(tmp_path / f"{name}.npy", speech_log_mel[:, :n].numpy())
    out = tmp_path / "wavs"
    result = invoke("vocode", generator_file, tmp_path / "short.npy", tmp_path / "long.npy", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    for name, n in lengths.items():
        wave, rate = soundfile.read(out / f"{name}.wav")
        assert rate == 22050 and len(wave) == n * 256
    assert "short.wav  0.13 s" in result.output


def test_a_stopped_vocode_keeps_the_wavs_it_wrote_and_exits_with_the_signals_status(generator_file, speech_log_mel,
                                                                                      tmp_path, monkeypatch):
    mels = []
    for name, n in {"a": 11, "b": 30, "c": 50}.items():
        mels.append(tmp_path / f"{name}.npy")
        np.save(mels[-1], speech_log_mel[:, :n].numpy())
    out = tmp_path / "wavs"
    # stopped while vocoding the second mel (one at a time on the CPU): the first is written already
    monkeypatch.setattr(Vocoder, "vocode", signal_on_call(Vocoder.vocode, 2, signal.SIGINT))
    result = invoke("vocode", generator_file, *mels, "-o", out, "-q")
    assert result.exit_code == 130, result.output
    assert result.output.splitlines()[-1] == f"interrupted by SIGINT; 1 of the 3 wavs were written to {out} before it"
    [written] = out.iterdir()
    assert result.output.startswith(f"{written}  ") and len(soundfile.read(written)[0]) > 0


def test_bad_input_gets_one_line_naming_the_file_and_the_reason(micro_checkpoint, generator_file, speech_log_mel,
                                                                 tmp_path):
    transposed = tmp_path / "transposed.npy"
    np.save(transposed, speech_log_mel[:, :20].T.numpy())
    few_bands = tmp_path / "few_bands.npy"
    np.save(few_bands, speech_log_mel[:40, :20].numpy())
    lonely = tmp_path / "lonely" / "generator"
    lonely.parent.mkdir()
    lonely.write_bytes(generator_file.read_bytes())
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    archive = tmp_path / "archive.npz"
    np.savez(archive, mel=speech_log_mel[:, :20].numpy())
    in_the_way = tmp_path / "in_the_way"
    in_the_way.write_text("")
    fine = tmp_path / "fine.npy"
    np.save(fine, speech_log_mel[:, :20].numpy())
    code_carrying = tmp_path / "code_carrying.pt"
    torch.save({"generator": {}, "where": Path("/")}, code_carrying)  # any class outside weights_only's list
    cases = [
        (("vocode", generator_file, transposed), f"{transposed}: shape (20, 80), the vocoder takes (80, frames) (transposed?"),
        (("vocode", generator_file, few_bands), f"{few_bands}: shape (40, 20), the vocoder takes (80, frames)"),
        (("vocode", generator_file, empty), f"{empty}: not a readable .npy array"),
        (("vocode", generator_file, archive), f"{archive}: an archive of arrays (mel), not one .npy mel"),
        (("vocode", lonely, transposed), f"{lonely.parent / 'config.json'}: no such HiFi-GAN config"),
        (("vocode", micro_checkpoint, transposed, "--vocoder-config", generator_file.parent / "config.json"),
         f"{micro_checkpoint}: not a HiFi-GAN generator file (no 'generator' state dict"),
        (("synth", micro_checkpoint, "Hi.", "--vocoder", generator_file, "--vocoder-config", generator_file),
         f"{generator_file}: not a HiFi-GAN config"),
        (("vocode", code_carrying, transposed, "--vocoder-config", generator_file.parent / "config.json"),
         f"{code_carrying}: not a readable torch file"),
    ]
    cases.append((("vocode", generator_file, fine), f"{in_the_way}: is a file, not a folder"))
    for args, message in cases:
        out = in_the_way / "out" if message.startswith(str(in_the_way)) else tmp_path / "out"
        result = invoke(*args, "-o", out)
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_synth_refuses_a_vocoder_of_other_mels_or_one_that_makes_nan_in_one_line(micro_checkpoint, tmp_path):
    torch.manual_seed(0)
    other_rate = save_reference_file(tmp_path / "LJ_16k", Generator(dataclasses.replace(SMALL["2"], sampling_rate=16000)))
    broken = Generator(SMALL["2"])
    for parameter in broken.parameters():
        parameter.data.fill_(float("nan"))
    broken = save_reference_file(tmp_path / "broken", broken)
    cases = [
        (other_rate, f"{micro_checkpoint}: its mels are not the ones the vocoder was trained on: "
                     "sample_rate 22050 (the vocoder's: 16000)"),
        (broken, "text 1 ('Hi.'): the vocoder's waveform is NaN/inf; the generator's weights are broken"),
    ]
    for generator, message in cases:
        out = tmp_path / "hi.wav"
        result = invoke("synth", micro_checkpoint, "Hi.", "--vocoder", generator, "-o", out)
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not out.exists()
