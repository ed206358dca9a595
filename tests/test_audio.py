"""Audio reading: any format libsndfile reads becomes mono float32 at the target rate; bad files give reasons."""

import re

import numpy as np
import pytest
import soundfile
import soxr

from taco.features.audio import TRIM_HOP, AudioError, load_audio, trim_silence


def test_stereo_24_bit_44k_flac_becomes_mono_float32_at_the_target_rate(speech, tmp_path):
    samples, rate = speech
    stereo = np.stack([samples, 0.5 * samples], axis=1)
    upsampled = soxr.resample(stereo, rate, 44100)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, upsampled, 44100, subtype="PCM_24")

    loaded = load_audio(path, rate)

    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(len(loaded) - len(samples)) <= 2
    n = min(len(loaded), len(samples))
    # the channel average is 0.75 x the original; a band-limited resampler round trip keeps it close
    assert np.corrcoef(loaded[:n], 0.75 * samples[:n])[0, 1] > 0.999


def test_8_bit_wav_at_16k_is_read_and_resampled(speech, tmp_path):
    samples, rate = speech
    path = tmp_path / "low.wav"
    soundfile.write(path, soxr.resample(samples, rate, 16000), 16000, subtype="PCM_U8")
    loaded = load_audio(path, rate)
    assert len(loaded) == pytest.approx(len(samples), abs=3)
    n = min(len(loaded), len(samples))
    # unsigned 8-bit is centred and scaled like any other depth: the same waveform at the same level, less
    # what 16 kHz drops above 8 kHz and 8 bits' noise
    assert np.corrcoef(loaded[:n], samples[:n])[0, 1] > 0.98
    assert np.std(loaded) / np.std(samples) == pytest.approx(1, abs=0.05)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_16_bit_files_read_as_the_same_floats_libsndfile_gives(speech, tmp_path, channels, suffix):
    samples, rate = speech
    path = tmp_path / f"pcm16{suffix}"
    soundfile.write(path, np.stack([samples, -0.5 * samples][:channels], axis=1), rate, subtype="PCM_16")

    libsndfile_floats = soundfile.read(path, dtype="float32", always_2d=True)[0].mean(axis=1, dtype=np.float32)

    np.testing.assert_array_equal(load_audio(path, rate), libsndfile_floats)


@pytest.mark.parametrize("content, reason", [
    (None, "missing audio file"),
    (b"", "empty audio file (0 bytes)"),
    (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", "unreadable audio"),
    (bytes(range(256)) * 4, "unreadable audio"),
])
def test_missing_empty_and_corrupt_files_raise_their_reason(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError, match="^" + re.escape(reason)):
        load_audio(path, 22050)


def test_a_file_with_a_header_and_no_samples_is_empty(tmp_path):
    path = tmp_path / "header_only.wav"
    soundfile.write(path, np.zeros(0, np.float32), 22050)
    with pytest.raises(AudioError, match="^empty audio$"):
        load_audio(path, 22050)


def test_digital_silence_is_rejected_as_silent(tmp_path):
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(22050, np.float32), 22050)
    with pytest.raises(AudioError, match="^silent audio"):
        load_audio(path, 22050)


@pytest.mark.parametrize("bad_sample", [np.nan, np.inf])
def test_a_float_file_with_a_nan_or_infinite_sample_is_refused(speech, tmp_path, bad_sample):
    samples = speech[0].copy()
    samples[1000] = bad_sample
    path = tmp_path / "broken.wav"
    soundfile.write(path, samples, speech[1], subtype="FLOAT")
    with pytest.raises(AudioError, match="^audio holds NaN or infinite samples$"):
        load_audio(path, speech[1])


def test_trim_cuts_leading_and_trailing_silence_but_keeps_the_speech(speech):
    samples, rate = speech
    padded = np.concatenate([np.zeros(rate), samples, np.zeros(rate)]).astype(np.float32)
    trimmed = trim_silence(padded, top_db=60)
    # trimming works in frames, so up to a hop of each second of silence may stay
    assert len(padded) - len(trimmed) >= 2 * (rate - TRIM_HOP)
    energy = np.square(padded, dtype=np.float64).sum()
    assert np.square(trimmed, dtype=np.float64).sum() > 0.999 * energy
