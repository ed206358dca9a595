"""The `taco` command through click's CliRunner: exit codes, one-line errors, JSON output."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from taco.cli import main

from conftest import add_utterance, loud_cosine_wav


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


def test_verify_finds_a_shard_that_disagrees_with_the_index(make_corpus, tmp_path):
    store = tmp_path / "store"
    invoke("preprocess", make_corpus(2), store, "--jobs", "1", "--quiet")
    assert "ok: every shard matches the index" in invoke("store-info", store, "--verify").output
    with h5py.File(store / "shards" / "00000.h5", "r+") as shard:
        shard["mels"][0, 0] = float("nan")
    result = invoke("store-info", store, "--verify")
    assert result.exit_code == 1
    assert "00000.h5: mels hold NaN or infinite values" in result.output


def test_verify_finds_a_shard_whose_values_were_overwritten_in_place(make_corpus, tmp_path):
    store = tmp_path / "store"
    invoke("preprocess", make_corpus(2), store, "--jobs", "1", "--quiet")
    with h5py.File(store / "shards" / "00000.h5", "r+") as shard:
        # finite, in range, the right shape: only the bytes tell
        shard["mels"][...] = np.random.default_rng(0).uniform(-4, 4, shard["mels"].shape)
    result = invoke("store-info", store, "--verify")
    assert result.exit_code == 1
    assert "00000.h5: content differs from the checksum recorded when it was written" in result.output


def test_an_index_row_naming_a_shard_outside_the_store_is_refused(make_corpus, tmp_path):
    store = tmp_path / "store"
    invoke("preprocess", make_corpus(2), store, "--jobs", "1", "--quiet")
    index = store / "index.tsv"
    index.write_text(index.read_text().replace("\t00000.h5\t", "\t../../elsewhere.h5\t", 1))
    result = invoke("store-info", store)
    assert result.exit_code == 1
    assert result.output == (f"Error: {index}: line 2 names the shard '../../elsewhere.h5', which is not one of "
                             "the store's shards\n")


def test_store_info_on_a_folder_that_is_not_a_store_says_so(tmp_path):
    result = invoke("store-info", tmp_path)
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path}: not a taco feature store (no store.json)\n"


def test_help_explains_each_command():
    assert "preprocess" in invoke("--help").output and "store-info" in invoke("--help").output
    help_text = invoke("preprocess", "--help").output
    assert "--val-fraction" in help_text and "[default: 0.05; 0<=x<1]" in help_text and "dask" in help_text
