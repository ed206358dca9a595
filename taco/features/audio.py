"""Reading audio for the feature store: any file libsndfile reads -> mono float32 at the target rate.

Real corpora hold missing, empty, corrupt and silent files; each becomes an `AudioError` whose
message is the one-line reason the preprocess report shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr

from taco.errors import one_line

# A clip whose peak stays below -80 dBFS holds no speech: 16-bit audio's quantization floor is -96 dBFS,
# so this leaves room for dither and hum while still catching "recorded nothing".
SILENCE_PEAK = 10 ** (-80 / 20)
# Frames for silence trimming, in samples at the target rate: the STFT's own sizes at 22.05 kHz.
TRIM_FRAME = 1024
TRIM_HOP = 256


class AudioError(Exception):
    """An audio file that cannot become a training example; str() is the reason."""


def load_audio(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Read `path` as mono float32 in [-1, 1] at `sample_rate`, resampled with soxr (band-limited, HQ).

    A file whose header says it lasts longer than `max_seconds` is refused before any of it is decoded: a
    stray 30-minute recording would otherwise take 676 MB of memory to be measured and skipped.
    """
    if not path.is_file():
        raise AudioError("missing audio file")
    if path.stat().st_size == 0:
        raise AudioError("empty audio file (0 bytes)")
    try:
        with soundfile.SoundFile(path) as file:
            file_rate = file.samplerate
            seconds = file.frames / file_rate
            if max_seconds is not None and seconds > max_seconds:
                raise AudioError(f"too long: {seconds:.1f} s > {max_seconds:g} s")
            # libsndfile's int16 -> float conversion takes 2/3 of reading a 16-bit file (0.26 ms of a 4 s
            # clip, 0.1 ms without it); scaling by 2**-15 in numpy below gives the same floats
            samples = file.read(dtype="int16" if file.subtype == "PCM_16" else "float32", always_2d=True)
    except soundfile.LibsndfileError as error:
        # error_string is libsndfile's reason without the path, which the report already names
        raise AudioError(f"unreadable audio: {error.error_string}") from None
    except (soundfile.SoundFileError, RuntimeError, ValueError) as error:
        raise AudioError(f"unreadable audio: {one_line(error)}") from None
    if samples.shape[0] == 0:
        raise AudioError("empty audio")
    # (samples, channels) -> (samples,): the average keeps a stereo recording's level; a mono file's
    # one column is taken as it is (a view, where a mean would cost a pass over the samples)
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)
    if samples.dtype == np.int16:
        mono = mono * np.float32(2**-15)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    peak = np.abs(mono).max()  # NaN or inf in any sample makes the peak NaN or inf
    if not np.isfinite(peak):
        raise AudioError("audio holds NaN or infinite samples")
    if peak < SILENCE_PEAK:
        raise AudioError("silent audio (peak below -80 dBFS)")
    return mono


def trim_silence(samples: np.ndarray, top_db: float) -> np.ndarray:
    """Cut leading and trailing frames whose RMS is more than `top_db` below the loudest frame's."""
    if len(samples) < TRIM_FRAME:
        return samples
    # (samples,) -> (frames, TRIM_FRAME), a view without copying
    frames = np.lib.stride_tricks.sliding_window_view(samples, TRIM_FRAME)[::TRIM_HOP]
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-top_db / 20))
    start = loud[0] * TRIM_HOP
    end = min(len(samples), loud[-1] * TRIM_HOP + TRIM_FRAME)
    return samples[start:end]
