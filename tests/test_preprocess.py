"""The preprocess stage and the store it writes: round trip, resume, refusal, bad input, reader."""

import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import soundfile
import torch

from taco.features.audio import load_audio
from taco.features.mel import DB_MAX, MEL_FLOOR, FeatureConfig, mel_spectrogram
from taco.features.preprocess import preprocess
from taco.features.store import STORE_KEYS, FeatureStore, StoreError
from taco.features.summary import verify_store
from taco.features.text import TextConfig, encode

from conftest import add_utterance, bundled_lines, librosa_mel, loud_cosine_wav


def run(corpus, store, **options):
    return preprocess(corpus, store, progress=False, **({"jobs": 1} | options))


def test_store_round_trip_gives_back_the_mel_and_tokens_of_each_utterance(make_corpus, tmp_path):
    corpus = make_corpus(6)
    summary = run(corpus, tmp_path / "store", shard_size=4, val_count=2)

    store = FeatureStore(tmp_path / "store")
    assert len(store) == 6 and summary["shards"] == 2
    assert summary["utterances"] == {"train": 4, "val": 2}
    lines = (corpus / "metadata.csv").read_text().splitlines()
    for index, line in enumerate(lines):
        id_, _, text = line.split("|")
        tokens, mel = store[store.ids.index(id_)]
        expected = mel_spectrogram(torch.from_numpy(load_audio(corpus / "wavs" / f"{id_}.flac", 22050)), FeatureConfig())
        np.testing.assert_array_equal(mel, expected.T.numpy())  # (n_frames, n_mels)
        assert tokens.tolist() == encode(text, TextConfig()).ids
    assert store.n_frames.tolist() == [store[i][1].shape[0] for i in range(6)]


def test_lengths_and_splits_come_from_the_index_without_opening_a_shard(make_corpus, tmp_path):
    run(make_corpus(5), tmp_path / "store", val_count=1)
    store = FeatureStore(tmp_path / "store")
    assert len(store.split_indices("train")) == 4 and len(store.split_indices("val")) == 1
    assert (store.n_frames > 100).all() and (store.n_tokens > 10).all()
    assert store._open_shards == {}


def test_reader_pickles_without_open_files_and_reads_in_a_forked_worker(make_corpus, tmp_path):
    run(make_corpus(3), tmp_path / "store")
    store = FeatureStore(tmp_path / "store")
    first = store[0]
    clone = pickle.loads(pickle.dumps(store))
    assert clone._open_shards == {}
    np.testing.assert_array_equal(clone[0][1], first[1])
    loader = torch.utils.data.DataLoader(store, batch_size=None, num_workers=2, multiprocessing_context="fork")
    assert [mel.shape[0] for _, mel in loader] == store.n_frames.tolist()


def test_mel_statistics_are_the_float64_mean_and_std_of_the_training_frames(make_corpus, tmp_path):
    run(make_corpus(6), tmp_path / "store", shard_size=2, val_count=2)
    store = FeatureStore(tmp_path / "store")
    frames = np.concatenate([store[i][1] for i in store.split_indices("train")]).astype(np.float64)
    stats = store.info["stats"]
    assert stats["frames"] == len(frames)
    np.testing.assert_allclose(stats["mean"], frames.mean(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats["std"], frames.std(axis=0), rtol=1e-6, atol=1e-9)


def test_store_records_how_it_was_made(make_corpus, tmp_path):
    run(make_corpus(3), tmp_path / "store", features=FeatureConfig(normalization="log"))
    info = json.loads((tmp_path / "store" / "store.json").read_text())
    assert info["complete"] is True and info["format_version"] == 3
    assert sorted(info) == sorted(STORE_KEYS)  # what a reader checks for
    assert info["feature_config"]["normalization"] == "log"
    assert info["text_config"] == TextConfig().to_dict()
    assert info["symbols"][:2] == ["_", "~"]
    assert info["split"]["method"] == "random" and info["split"]["seed"] == 1234
    assert {"torch", "numpy", "h5py", "libsndfile", "soxr"} <= set(info["library_versions"])


@pytest.mark.parametrize("normalization", ["db", "log"])
def test_store_counts_the_training_mel_bins_clipped_at_each_end(make_corpus, tmp_path, normalization):
    corpus = make_corpus(2)
    add_utterance(corpus, "loud", "a constructed tone, loud beyond full scale", loud_cosine_wav())
    add_utterance(corpus, "loud_val", "the same tone, held out", loud_cosine_wav())
    lines = (corpus / "metadata.csv").read_text().splitlines()
    (corpus / "train.csv").write_text("\n".join(lines[:3]) + "\n")
    (corpus / "val.csv").write_text(lines[3] + "\n")
    features = FeatureConfig(normalization=normalization)
    # shards of 2: the bundled utterances in one, the tones in the other
    summary = run(corpus, tmp_path / "store", features=features, train_metadata="train.csv", val_metadata="val.csv",
                  shard_size=2)

    stats = FeatureStore(tmp_path / "store").info["stats"]
    # the reference: librosa's linear mels of the training clips, against the -100 dB floor and +20 dB ceiling
    train_ids = [line.split("|")[0] for line in lines[:3]]
    train_clips = [load_audio(next((corpus / "wavs").glob(f"{id_}.*")), 22050) for id_ in train_ids]
    reference = np.concatenate([librosa_mel(clip, features) for clip in train_clips], axis=1)
    at_floor, at_ceiling = int((reference <= MEL_FLOOR).sum()), int((reference >= 10 ** (DB_MAX / 20)).sum())
    assert at_floor > 0 and at_ceiling > 0  # the tone clips at both ends
    bins = stats["frames"] * features.n_mels
    assert stats["bins_at_floor"] == at_floor
    if normalization == "db":
        assert stats["bins_at_ceiling"] == at_ceiling
        assert summary["clipped"] == {"floor": at_floor / bins, "ceiling": at_ceiling / bins}
    else:  # the natural log has no ceiling
        assert stats["bins_at_ceiling"] == 0
        assert summary["clipped"] == {"floor": at_floor / bins, "ceiling": None}


def test_split_can_come_from_train_and_val_metadata_files(make_corpus, tmp_path):
    corpus = make_corpus(5)
    lines = (corpus / "metadata.csv").read_text().splitlines()
    (corpus / "train_metadata.csv").write_text("\n".join(lines[:3]) + "\n")
    (corpus / "test_metadata.csv").write_text("\n".join(lines[2:]) + "\n")  # line 2 in both
    summary = run(corpus, tmp_path / "store", train_metadata="train_metadata.csv", val_metadata="test_metadata.csv")
    assert summary["utterances"] == {"train": 2, "val": 2}
    assert summary["failures"] == [{"id": lines[2].split("|")[0], "reason": "id in both train and val metadata"}]


def test_bad_inputs_are_skipped_with_reasons_and_the_rest_is_processed(make_corpus, tmp_path):
    corpus = make_corpus(3)
    silence = tmp_path / "silence.wav"
    soundfile.write(silence, np.zeros(22050, np.float32), 22050)
    long_clip = tmp_path / "long.wav"
    soundfile.write(long_clip, np.random.default_rng(0).uniform(-0.5, 0.5, 22050 * 8).astype(np.float32), 22050)
    add_utterance(corpus, "missing", "no audio file at all", None)
    add_utterance(corpus, "empty", "a zero byte file", b"")
    add_utterance(corpus, "corrupt", "random bytes", bytes(range(256)) * 8)
    add_utterance(corpus, "silent", "digital silence", silence.read_bytes())
    add_utterance(corpus, "long", "eight seconds of noise", long_clip.read_bytes())
    add_utterance(corpus, "notext", "   ", silence.read_bytes())
    add_utterance(corpus, "symbols", "### ...", long_clip.read_bytes())
    first_clip = (corpus / "wavs" / "FLT001-0001.flac").read_bytes()
    add_utterance(corpus, "odd_text", "an odd # text @ home \U0001F600", first_clip)

    summary = run(corpus, tmp_path / "store", max_seconds=7.5, shard_size=4)

    assert summary["utterances"]["train"] + summary["utterances"]["val"] == 4
    reasons = {f["id"]: f["reason"] for f in summary["failures"]}
    assert reasons == {
        "missing": "missing audio file",
        "empty": "empty audio file (0 bytes)",
        "corrupt": "unreadable audio: Format not recognised.",
        "silent": "silent audio (peak below -80 dBFS)",
        "long": "too long: 8.0 s > 7.5 s",
        "notext": "empty text",
        "symbols": "no letters in text",
    }
    assert summary["dropped_characters"] == {"#": 1, "@": 1, "\U0001F600": 1}
    failures_tsv = (tmp_path / "store" / "failures.tsv").read_text().splitlines()
    assert failures_tsv[0] == "id\treason" and len(failures_tsv) == 8


def wav_bytes(samples: np.ndarray, rate: int = 22050) -> bytes:
    wav = io.BytesIO()
    soundfile.write(wav, samples.astype(np.float32), rate, format="WAV")
    return wav.getvalue()


def test_anything_one_utterance_raises_is_its_failure_and_the_run_goes_on(make_corpus, tmp_path):
    corpus = make_corpus(3)
    # 18 ms: fewer samples than the STFT's reflect padding takes from each end
    add_utterance(corpus, "blip", "a click", wav_bytes(np.random.default_rng(0).uniform(-0.5, 0.5, 397)))
    # an id longer than a file name may be: looking for its audio raises, not "missing"
    add_utterance(corpus, "x" * 300, "an id as long as a paragraph", None)

    for _ in range(2):  # a re-run meets the same clips and finishes too
        summary = run(corpus, tmp_path / "store", shard_size=2)
        assert sum(summary["utterances"].values()) == 3
        assert {f["id"]: f["reason"] for f in summary["failures"]} == {
            "blip": "too short: 0.018 s",
            "x" * 300: "OSError: File name too long",
        }


def test_an_unforeseen_error_in_one_utterance_keeps_the_rest_of_its_shard(make_corpus, tmp_path, monkeypatch):
    from taco.features import preprocess as module

    corpus = make_corpus(3)
    second = bundled_lines(2)[1].split("|")[0]
    real_mel = module.mel_spectrogram

    def mel_failing_on_the_second(wave, config):
        if len(wave) == len(load_audio(corpus / "wavs" / f"{second}.flac", 22050)):
            raise RuntimeError("a bug nobody foresaw\nwith a second line")
        return real_mel(wave, config)

    monkeypatch.setattr(module, "mel_spectrogram", mel_failing_on_the_second)
    summary = run(corpus, tmp_path / "store", shard_size=3)
    assert summary["utterances"]["train"] + summary["utterances"]["val"] == 2
    assert summary["failures"] == [{"id": second, "reason": "RuntimeError: a bug nobody foresaw"}]


def test_a_clip_over_max_seconds_is_refused_from_its_header_without_decoding_it(make_corpus, tmp_path, monkeypatch):
    corpus = make_corpus(1)
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 8000 * 60)
    add_utterance(corpus, "minute", "a minute of noise", wav_bytes(noise, 8000))
    decoded = []
    real_read = soundfile.SoundFile.read
    monkeypatch.setattr(soundfile.SoundFile, "read", lambda file, *a, **k: decoded.append(file.name) or real_read(file, *a, **k))

    summary = run(corpus, tmp_path / "store", max_seconds=20)
    assert summary["failures"] == [{"id": "minute", "reason": "too long: 60.0 s > 20 s"}]
    assert not any("minute" in str(name) for name in decoded) and len(decoded) == 1


def test_with_trimming_only_clips_over_twice_max_seconds_are_refused_from_the_header(make_corpus, tmp_path):
    corpus = make_corpus(1)
    speech = load_audio(corpus / "wavs" / f"{bundled_lines(1)[0].split('|')[0]}.flac", 22050)
    # speech inside long silence: over max_seconds before trimming, well within it after
    for id_, pad_seconds in (("padded", 12), ("mostly_silence", 25)):
        pad = np.zeros(22050 * pad_seconds, np.float32)
        add_utterance(corpus, id_, "speech inside silence", wav_bytes(np.concatenate([pad, speech, pad])))

    summary = run(corpus, tmp_path / "store", max_seconds=20, features=FeatureConfig(trim_db=40), shard_size=3)
    seconds = 50 + len(speech) / 22050
    assert summary["failures"] == [{"id": "mostly_silence", "reason": f"too long: {seconds:.1f} s > 40 s"}]
    assert summary["utterances"]["train"] + summary["utterances"]["val"] == 2


def test_rerun_skips_complete_shards_and_finishes_an_interrupted_store(make_corpus, tmp_path):
    corpus, store_dir = make_corpus(6), tmp_path / "store"
    run(corpus, store_dir, shard_size=2)
    reference = [FeatureStore(store_dir)[i][1] for i in range(6)]
    reference_files = {name: (store_dir / name).read_text() for name in ("index.tsv", "failures.tsv")}
    reference_stats = json.loads((store_dir / "store.json").read_text())["stats"]
    shards = sorted((store_dir / "shards").glob("*.h5"))
    # the state a killed run leaves: an unfinished store, a missing shard, a half-written temporary
    info = json.loads((store_dir / "store.json").read_text())
    (store_dir / "store.json").write_text(json.dumps(info | {"complete": False}))
    shards[1].unlink()
    (store_dir / "shards" / "00002.h5.tmp-99999").write_bytes(b"half a shard")
    untouched = {p.name: p.stat().st_mtime_ns for p in (shards[0], shards[2])}
    with pytest.raises(StoreError, match="incomplete store"):
        FeatureStore(store_dir)

    run(corpus, store_dir, shard_size=2)

    assert {p.name: p.stat().st_mtime_ns for p in (shards[0], shards[2])} == untouched
    assert sorted(p.name for p in (store_dir / "shards").iterdir()) == ["00000.h5", "00001.h5", "00002.h5"]
    store = FeatureStore(store_dir)
    for i in range(6):
        np.testing.assert_array_equal(store[i][1], reference[i])
    assert {name: (store_dir / name).read_text() for name in reference_files} == reference_files
    assert store.info["stats"] == reference_stats  # the reused shards' sums count as the remade one's do


def test_rerun_remakes_a_shard_whose_bytes_changed_since_its_checksum_was_recorded(make_corpus, tmp_path):
    corpus, store_dir = make_corpus(4), tmp_path / "store"
    run(corpus, store_dir, shard_size=2)
    reference = [FeatureStore(store_dir)[i][1] for i in range(4)]
    damaged, intact = sorted((store_dir / "shards").glob("*.h5"))
    with h5py.File(damaged, "r+") as shard:
        shard["mels"][0, 0] += 1.0  # readable, right ids and fingerprint: only the checksum tells
    untouched = intact.stat().st_mtime_ns

    run(corpus, store_dir, shard_size=2)

    assert intact.stat().st_mtime_ns == untouched
    store = FeatureStore(store_dir)
    for i in range(4):
        np.testing.assert_array_equal(store[i][1], reference[i])
    assert verify_store(store) == []


def test_kill_9_mid_run_leaves_no_shard_taken_for_complete_and_a_rerun_finishes(make_corpus, tmp_path):
    corpus, store_dir = make_corpus(40), tmp_path / "store"
    command = [sys.executable, "-m", "taco", "preprocess", str(corpus), str(store_dir), "--shard-size", "1",
               "--jobs", "1", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list((store_dir / "shards").glob("*.h5"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert not json.loads((store_dir / "store.json").read_text())["complete"], "the run finished before the kill"
    for shard in (store_dir / "shards").glob("*.h5"):
        with h5py.File(shard, "r") as complete:
            assert complete["mel_offsets"][-1] == len(complete["mels"])
    summary = run(corpus, store_dir, shard_size=1)
    assert sum(summary["utterances"].values()) == 40
    assert summary["failures"] == [] and not list((store_dir / "shards").glob("*.tmp-*"))


def test_a_shard_whose_offsets_disagree_with_the_index_is_refused_when_read(make_corpus, tmp_path):
    run(make_corpus(2), tmp_path / "store")
    shard = tmp_path / "store" / "shards" / "00000.h5"
    with h5py.File(shard, "r+") as file:
        file["mel_offsets"][1] += 1  # the first utterance one frame longer, the second one shorter
    message = f"{shard}: damaged shard (its offsets disagree with the index); run taco store-info --verify"
    with pytest.raises(StoreError, match=re.escape(message)):
        FeatureStore(tmp_path / "store")[0]


def test_a_different_configuration_is_refused_unless_overwrite(make_corpus, tmp_path):
    corpus, store_dir = make_corpus(2), tmp_path / "store"
    run(corpus, store_dir)
    with pytest.raises(StoreError, match="another configuration.*--overwrite"):
        run(corpus, store_dir, features=FeatureConfig(n_mels=40))
    assert FeatureStore(store_dir).feature_config.n_mels == 80

    run(corpus, store_dir, features=FeatureConfig(n_mels=40), overwrite=True)
    assert FeatureStore(store_dir)[0][1].shape[1] == 40


def test_a_store_of_an_older_format_is_refused_until_preprocess_overwrites_it(make_corpus, tmp_path):
    corpus, store_dir = make_corpus(2), tmp_path / "store"
    run(corpus, store_dir)
    info = json.loads((store_dir / "store.json").read_text())
    # as format 2 wrote it: shard names without checksums, a fingerprint over format 2
    older = {"format_version": 2, "fingerprint": "0" * 16, "shards": list(info["shards"])}
    (store_dir / "store.json").write_text(json.dumps(info | older))

    message = "store format 2 but this taco reads format 3; re-run taco preprocess with --overwrite"
    with pytest.raises(StoreError, match=message):
        FeatureStore(store_dir)
    # doing what the message says: a plain re-run is refused, naming the format ...
    with pytest.raises(StoreError, match=r"another version of taco \(store format 2, this taco writes format 3\)"):
        run(corpus, store_dir)
    # ... and --overwrite remakes the store
    run(corpus, store_dir, overwrite=True)
    assert FeatureStore(store_dir).info["format_version"] == 3


def test_a_folder_that_is_not_a_store_is_never_written_into(make_corpus, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(StoreError, match="not a taco feature store"):
        run(make_corpus(1), precious, overwrite=True)
    assert os.listdir(precious) == ["thesis.tex"]


@pytest.mark.parametrize("backend", ["loky", "multiprocessing", "threading"])
def test_any_joblib_backend_gives_the_same_store_as_one_process(make_corpus, tmp_path, backend):
    corpus = make_corpus(8)
    run(corpus, tmp_path / "serial", shard_size=2)
    run(corpus, tmp_path / "parallel", shard_size=2, jobs=2, backend=backend)
    serial, parallel = FeatureStore(tmp_path / "serial"), FeatureStore(tmp_path / "parallel")
    assert serial.ids == parallel.ids and serial.fingerprint == parallel.fingerprint
    for i in range(8):
        np.testing.assert_array_equal(serial[i][1], parallel[i][1])


def test_worker_sets_one_torch_thread_and_restores_the_callers_count(make_corpus, tmp_path, monkeypatch):
    threads_seen = []

    def recording_mel_spectrogram(*args, **kwargs):
        threads_seen.append(torch.get_num_threads())
        return mel_spectrogram(*args, **kwargs)

    monkeypatch.setattr("taco.features.preprocess.mel_spectrogram", recording_mel_spectrogram)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run(make_corpus(1), tmp_path / "store")  # jobs=1: the worker runs in this process
        assert threads_seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        # the session runs on one thread: later tests compare weights bit for bit with runs made before this one
        torch.set_num_threads(threads)
