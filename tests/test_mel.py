"""Mel features: the filterbank and the normalized mel match librosa; normalizations invert."""

import librosa
import numpy as np
import pytest
import soundfile
import torch

from taco.features.mel import (
    FeatureConfig, clip_limits, denormalize, magnitude_stft, mel_filterbank, mel_spectrogram,
    normalize,
)

from conftest import BUNDLED_CORPUS, bundled_lines, librosa_mel


@pytest.mark.parametrize("sample_rate, n_fft, n_mels, f_max", [(22050, 1024, 80, 8000.0), (16000, 512, 40, 7600.0)])
def test_filterbank_is_librosas_slaney_filterbank(sample_rate, n_fft, n_mels, f_max):
    ours = mel_filterbank(sample_rate, n_fft, n_mels, 0.0, f_max).numpy()
    reference = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=f_max, htk=False, norm="slaney")
    np.testing.assert_allclose(ours, reference, atol=1e-8)


@pytest.mark.parametrize("settings", [
    {"normalization": "db"},
    {"normalization": "log"},
    {"n_mels": 40, "f_min": 50.0},  # the last block of 16 filters holds 8
    # more filters than bins: some weigh no bin, which librosa warns about
    pytest.param({"n_mels": 256, "f_max": 4000.0}, marks=pytest.mark.filterwarnings("ignore:Empty filters")),
])
def test_float64_fft_precision_keeps_the_mel_of_real_speech_within_1e_4_of_librosa(speech, settings):
    samples, rate = speech
    config = FeatureConfig(sample_rate=rate, fft_precision="float64", **settings)
    normalization = config.normalization
    ours = mel_spectrogram(torch.from_numpy(samples), config)
    reference = normalize(torch.from_numpy(librosa_mel(samples, config)), normalization)
    assert ours.dtype == torch.float32
    # a centred STFT: one frame per hop, and one more
    assert ours.shape == reference.shape == (config.n_mels, 1 + len(samples) // config.hop_length)
    assert ours.mT.is_contiguous()  # one frame per row, as the store keeps them, without a copy
    assert (ours - reference).abs().max().item() < 1e-4


@pytest.mark.parametrize("normalization", ["db", "log"])
def test_the_default_float32_fft_stays_within_5e_4_of_librosa(speech, normalization):
    samples, rate = speech
    config = FeatureConfig(sample_rate=rate, normalization=normalization)
    assert config.fft_precision == "float32"
    fast = mel_spectrogram(torch.from_numpy(samples), config)
    reference = normalize(torch.from_numpy(librosa_mel(samples, config)), normalization)
    precise = FeatureConfig(sample_rate=rate, normalization=normalization, fft_precision="float64")
    assert fast.dtype == torch.float32
    assert not torch.equal(fast, mel_spectrogram(torch.from_numpy(samples), precise))
    assert (fast - reference).abs().max().item() < 5e-4


@pytest.mark.parametrize("settings", [
    {},
    {"n_mels": 40, "f_min": 50.0},
    {"n_mels": 1000, "f_max": 1000.0},  # filters narrower than a bin: whole blocks of 16 weigh no bin
])
def test_blocked_filterbank_product_equals_the_dense_product(speech, settings):
    config = FeatureConfig(**settings)
    samples = torch.from_numpy(speech[0][:22050])
    batch = torch.stack([samples, samples.flip(0)])
    magnitude = magnitude_stft(batch, config)  # float32, as the default fft_precision
    filters = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.f_min, config.f_max)
    # (n_mels, n_freqs) @ (2, n_freqs, frames) -> (2, n_mels, frames)
    dense = normalize(filters @ magnitude, config.normalization)
    torch.testing.assert_close(mel_spectrogram(batch, config), dense, rtol=0, atol=1e-5)


def test_db_normalization_maps_minus_100_to_plus_20_db_onto_minus_4_to_4():
    # -140, -100, -40, 0, +20, +40 dB
    mel = torch.tensor([1e-7, 1e-5, 1e-2, 1.0, 10.0, 100.0])
    assert normalize(mel, "db").tolist() == pytest.approx([-4.0, -4.0, 0.0, 8 / 3, 4.0, 4.0])


def test_clip_limits_are_the_ends_of_each_normalization():
    assert clip_limits("db") == (-4.0, 4.0)
    assert clip_limits("log") == (pytest.approx(np.log(1e-5)), None)


def test_full_scale_speech_clips_nothing_at_the_top():
    config = FeatureConfig()
    seed_top = normalize(torch.tensor(1.0), "db")  # 0 dB, where the seed clipped
    for line in bundled_lines(20):
        samples, _ = soundfile.read(BUNDLED_CORPUS / "wavs" / f"{line.split('|')[0]}.flac", dtype="float32")
        mel = mel_spectrogram(torch.from_numpy(samples / np.abs(samples).max()), config)
        assert seed_top < mel.max() < clip_limits("db")[1]


@pytest.mark.parametrize("normalization", ["db", "log"])
def test_denormalize_inverts_normalize_inside_the_clip_range(normalization):
    mel = torch.logspace(-4.9, 0.9, 50, dtype=torch.float64)  # -98 to +18 dB
    np.testing.assert_allclose(denormalize(normalize(mel, normalization), normalization), mel, rtol=1e-9)


def test_log_normalization_is_the_natural_log_clamped_at_1e_5():
    mel = torch.tensor([0.0, 1e-5, 1.0, 2.0])
    np.testing.assert_allclose(normalize(mel, "log"), np.log([1e-5, 1e-5, 1.0, 2.0]), rtol=1e-6)


def test_batched_input_gives_each_item_its_own_mel(speech):
    samples = torch.from_numpy(speech[0][:22050])
    config = FeatureConfig()
    batch = mel_spectrogram(torch.stack([samples, samples.flip(0)]), config)
    torch.testing.assert_close(batch[0], mel_spectrogram(samples, config))
    torch.testing.assert_close(batch[1], mel_spectrogram(samples.flip(0), config))


@pytest.mark.parametrize("bad, reason", [
    ({"n_mels": 0}, "n_mels must be positive"),
    ({"win_length": 2048}, r"win_length \(2048\) must not exceed n_fft"),
    ({"f_max": 12000.0}, "f_min < f_max <= sample_rate/2"),
    ({"f_min": 9000.0}, "f_min < f_max <= sample_rate/2"),
    ({"normalization": "dB"}, "normalization must be one of"),
    ({"trim_db": -20.0}, "trim_db must be positive"),
    ({"fft_precision": "float16"}, "fft_precision must be one of"),
])
def test_feature_config_rejects_impossible_settings_naming_the_reason(bad, reason):
    with pytest.raises(ValueError, match=reason):
        FeatureConfig(**bad)


def test_feature_config_refuses_a_band_that_holds_no_fft_bin():
    # 0-10 Hz lies below the first bin above 0 Hz (21.5 Hz at n_fft 1024), and the filters are zero at 0 Hz
    with pytest.raises(ValueError, match="every mel would be zero"):
        FeatureConfig(f_min=0.0, f_max=10.0)


def test_feature_config_round_trips_through_a_plain_dict():
    config = FeatureConfig(normalization="log", trim_db=40.0)
    assert FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        FeatureConfig.from_dict(config.to_dict() | {"preemphasis": 0.97})
