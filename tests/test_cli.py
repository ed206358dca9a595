"""The `taco` command through click's CliRunner: exit codes, one-line errors, JSON output."""

import json
import resource
import shutil
import signal
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from taco.cli import main
from taco.features.store import REBUILD, REMAKE, FeatureStore

from conftest import MICRO, add_utterance, loud_cosine_wav


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_preprocess_prints_the_summary_and_store_info_json_has_the_documented_keys(make_corpus, tmp_path):
    store = tmp_path / "store"
    result = invoke("preprocess", make_corpus(4), store, "--jobs", "1", "--val-count", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "3 utterances" in result.output

    info = invoke("store-info", store, "--json")
    summary = json.loads(info.output)
    assert summary["utterances"] == {"train": 3, "val": 1}
    assert set(summary["hours"]) == {"train", "val"} and summary["hours"]["train"] > 0
    assert len(summary["fingerprint"]) == 16
    assert summary["feature_config"]["n_mels"] == 80
    assert summary["failures"] == []


def test_feature_options_reach_the_stores_feature_config(make_corpus, tmp_path):
    store = tmp_path / "store"
    options = ["--normalization", "log", "--fft-precision", "float64", "--n-mels", "40"]  # none the default
    assert invoke("preprocess", make_corpus(2), store, "--jobs", "1", "--quiet", *options).exit_code == 0
    config = json.loads(invoke("store-info", store, "--json").output)["feature_config"]
    assert (config["normalization"], config["fft_precision"], config["n_mels"]) == ("log", "float64", 40)


@pytest.mark.parametrize("normalization", ["db", "log"])
def test_store_info_prints_the_shares_of_mel_bins_clipped_at_the_floor_and_the_ceiling(make_corpus, tmp_path,
                                                                                      normalization):
    corpus, store = make_corpus(1), tmp_path / "store"
    add_utterance(corpus, "loud", "a constructed tone, loud beyond full scale", loud_cosine_wav())
    invoke("preprocess", corpus, store, "--jobs", "1", "--quiet", "--val-count", "0", "--normalization", normalization)
    stats = json.loads((store / "store.json").read_text())["stats"]
    bins = stats["frames"] * 80
    shares = f"{stats['bins_at_floor'] / bins:.3%} of training mel bins at the floor"
    if normalization == "db":  # the natural log has no ceiling
        assert stats["bins_at_ceiling"] > 0
        shares += f", {stats['bins_at_ceiling'] / bins:.3%} at the ceiling"
    assert stats["bins_at_floor"] > 0
    assert f"clipped      {shares}\n" in invoke("store-info", store).output


def test_failures_are_listed_by_reason_and_the_run_still_succeeds(make_corpus, tmp_path):
    corpus = make_corpus(2)
    add_utterance(corpus, "gone", "missing audio", None)
    result = invoke("preprocess", corpus, tmp_path / "store", "--jobs", "1", "--quiet")
    assert result.exit_code == 0
    assert "skipped            1  (missing audio file: 1; see failures.tsv)" in result.output


def test_nothing_processable_exits_non_zero_with_a_one_line_reason(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "wavs").mkdir(parents=True)
    add_utterance(corpus, "a", "no audio", None)
    result = invoke("preprocess", corpus, tmp_path / "store", "--jobs", "1", "--quiet")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: no utterance could be processed")


def test_a_config_change_is_refused_with_one_line_and_no_traceback(make_corpus, tmp_path):
    corpus, store = make_corpus(1), tmp_path / "store"
    invoke("preprocess", corpus, store, "--jobs", "1", "--quiet")
    result = invoke("preprocess", corpus, store, "--jobs", "1", "--quiet", "--normalization", "log")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "another configuration" in result.output
    assert "Traceback" not in result.output


def _a_nan(mels):
    mels[0, 0] = float("nan")


def _random_values(mels):
    # finite, in range, the right shape: only the bytes tell
    mels[...] = np.random.default_rng(0).uniform(-4, 4, mels.shape)


@pytest.mark.parametrize("damage, problem", [
    (_a_nan, "mels hold NaN or infinite values"),
    (_random_values, "content differs from the checksum recorded when it was written"),
], ids=["a NaN", "values overwritten in place"])
def test_verify_finds_a_damaged_shard(make_corpus, tmp_path, damage, problem):
    store = tmp_path / "store"
    invoke("preprocess", make_corpus(2), store, "--jobs", "1", "--quiet")
    assert "ok: every shard matches the index" in invoke("store-info", store, "--verify").output
    with h5py.File(store / "shards" / "00000.h5", "r+") as shard:
        damage(shard["mels"])
    result = invoke("store-info", store, "--verify")
    assert result.exit_code == 1
    assert f"00000.h5: {problem}" in result.output


def test_verify_lists_a_shard_whose_hdf5_structure_is_damaged_instead_of_failing(make_corpus, tmp_path):
    store = tmp_path / "store"
    invoke("preprocess", make_corpus(2), store, "--jobs", "1", "--quiet")
    shard = store / "shards" / "00000.h5"
    data = bytearray(shard.read_bytes())
    data[25] ^= 0xFF  # inside the superblock's addresses: h5py raises KeyError ("addr overflow") on opening objects
    shard.write_bytes(bytes(data))
    result = invoke("store-info", store, "--verify")
    assert result.exit_code == 1
    assert "00000.h5: content differs from the checksum" in result.output and "00000.h5: cannot be read (" in result.output


def test_an_index_row_naming_a_shard_outside_the_store_is_refused(make_corpus, tmp_path):
    store = tmp_path / "store"
    invoke("preprocess", make_corpus(2), store, "--jobs", "1", "--quiet")
    index = store / "index.tsv"
    index.write_text(index.read_text().replace("\t00000.h5\t", "\t../../elsewhere.h5\t", 1))
    result = invoke("store-info", store)
    assert result.exit_code == 1
    assert result.output == (f"Error: {index}: line 2 names the shard '../../elsewhere.h5', which is not one of "
                             f"the store's shards; {REBUILD}\n")


def test_store_info_on_a_folder_that_is_not_a_store_says_so(tmp_path):
    result = invoke("store-info", tmp_path)
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path}: not a taco feature store (no store.json)\n"


def test_preprocess_into_a_path_below_a_file_says_so_in_one_line(make_corpus, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    store = tmp_path / "notes.txt" / "store"
    result = invoke("preprocess", make_corpus(1), store, "--jobs", "1", "--quiet")
    assert result.exit_code == 1
    assert result.output == f"Error: {store}: cannot write (Not a directory)\n"


@pytest.fixture
def file_size_limit():
    """file_size_limit(bytes): the OS refuses to grow any file past `bytes` until the test ends, as a full disk
    refuses (EFBIG where a full disk says ENOSPC; the write fails the same way)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the process is killed instead of told
    yield lambda size: resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


def test_a_full_disk_stops_preprocess_with_one_line_and_a_rerun_finishes(make_corpus, tmp_path, file_size_limit):
    corpus, store = make_corpus(2), tmp_path / "store"
    file_size_limit(40_000)  # store.json fits, a shard of two utterances' mels does not
    result = invoke("preprocess", corpus, store, "--jobs", "1", "--quiet")
    file_size_limit(resource.RLIM_INFINITY)
    assert result.exit_code == 1
    assert result.output == f"Error: {store / 'shards' / '00000.h5'}: cannot write (File too large)\n"
    assert list((store / "shards").iterdir()) == []  # no half-written temporary left to fill the disk

    assert invoke("preprocess", corpus, store, "--jobs", "1", "--quiet").exit_code == 0


def _cut_mid_line(path):
    path.write_bytes(path.read_bytes()[:-4])


def _without_keys(path, *keys):
    info = json.loads(path.read_text())
    path.write_text(json.dumps({key: value for key, value in info.items() if key not in keys}))


@pytest.mark.parametrize("file, damage, reason, remedy", [
    ("store.json", lambda path: path.write_text("[]"), "not a store description (a JSON list, not an object)",
     REMAKE),
    ("store.json", lambda path: _without_keys(path, "stats", "symbols"), "lacks symbols, stats", REMAKE),
    ("index.tsv", _cut_mid_line, "cut short (its last line ends mid-line)", REBUILD),
    ("index.tsv", lambda path: path.unlink(), "cannot be read (No such file or directory)", REBUILD),
    ("failures.tsv", _cut_mid_line, "cut short (its last line ends mid-line)", REBUILD),
], ids=["store.json is []", "store.json lacks keys", "index.tsv cut", "index.tsv missing", "failures.tsv cut"])
def test_a_damaged_store_file_is_one_line_naming_it_the_reason_and_the_remedy(make_corpus, tmp_path, file, damage,
                                                                            reason, remedy):
    corpus, store = make_corpus(3), tmp_path / "store"
    invoke("preprocess", corpus, store, "--jobs", "1", "--quiet", "--shard-size", "2")
    damage(store / file)
    result = invoke("store-info", store)
    assert result.exit_code == 1
    assert result.output == f"Error: {store / file}: {reason}; {remedy}\n"
    # doing what the message says mends the store
    overwrite = ["--overwrite"] if remedy == REMAKE else []
    assert invoke("preprocess", corpus, store, "--jobs", "1", "--quiet", "--shard-size", "2", *overwrite).exit_code == 0
    assert invoke("store-info", store, "--verify").exit_code == 0


def assert_says_shard_is_damaged(result, shard, store):
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {shard}: damaged shard (")
    assert result.output.endswith(f"); run taco store-info --verify {store}\n") and result.output.count("\n") == 1


def _truncated(shard):
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return shard


def test_training_on_a_damaged_shard_says_to_verify_the_store(make_corpus, tmp_path):
    store = tmp_path / "store"
    invoke("preprocess", make_corpus(4), store, "--jobs", "1", "--quiet", "--shard-size", "2")
    shard = _truncated(store / "shards" / "00001.h5")
    config = tmp_path / "micro.json"
    # a DataLoader worker reads the shards: its errors would reach the user wrapped in its traceback
    config.write_text(json.dumps(MICRO | {"training": MICRO["training"] | {"num_workers": 1}}))
    result = invoke("train", store, tmp_path / "run", "--config", config, "--quiet")
    assert_says_shard_is_damaged(result, shard, store)


def test_inspecting_a_damaged_shard_says_to_verify_the_store(small_store, micro_checkpoint, tmp_path):
    store = shutil.copytree(small_store, tmp_path / "store")
    shard = _truncated(store / "shards" / "00000.h5")
    first_id = FeatureStore(store).ids[0]
    result = invoke("inspect-alignment", micro_checkpoint, "--store", store, "--id", first_id, "-o", tmp_path / "out")
    assert_says_shard_is_damaged(result, shard, store)


def test_help_explains_each_command():
    overview = invoke("--help").output
    for command in ("preprocess", "store-info", "train", "synth", "vocode", "inspect-alignment"):
        assert f"taco {command} " in overview
        assert invoke(command, "--help").exit_code == 0
    help_text = invoke("preprocess", "--help").output
    assert "--val-fraction" in help_text and "[default: 0.05; 0<=x<1]" in help_text and "dask" in help_text


def test_preprocess_refuses_half_a_split_and_a_dask_backend_without_dask_naming_the_options(make_corpus, tmp_path,
                                                                                           monkeypatch):
    corpus = make_corpus(1)
    half_a_split = CliRunner().invoke(main, ["preprocess", str(corpus), str(tmp_path / "a"), "--train-metadata",
                                             "metadata.csv"])
    assert half_a_split.exit_code == 2 and "--train-metadata and --val-metadata go together" in half_a_split.output
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # importing it now raises ImportError
    result = invoke("preprocess", corpus, tmp_path / "b", "--backend", "dask", "--quiet")
    assert result.exit_code == 1
    assert result.output == "Error: the dask backend needs dask.distributed: pip install 'taco[dask]'\n"
