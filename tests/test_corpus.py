"""Corpus reading: LJSpeech metadata in both column layouts, bad lines as failures, a seeded split."""

import pytest

from taco.features.corpus import CorpusError, read_metadata, random_split


def write_metadata(tmp_path, text: str, encoding="utf-8"):
    path = tmp_path / "metadata.csv"
    path.write_text(text, encoding=encoding)
    (tmp_path / "wavs").mkdir(exist_ok=True)
    return path


def test_three_columns_use_the_normalized_text_and_two_columns_the_only_text(tmp_path):
    path = write_metadata(tmp_path, "A|Dr. Who 1|doctor who one\nB|plain text\nC|raw only|\n")
    entries, failures = read_metadata(path, tmp_path / "wavs")
    assert [(e.id, e.text) for e in entries] == [("A", "doctor who one"), ("B", "plain text"), ("C", "raw only")]
    assert failures == []


def test_flac_is_found_beside_wav_and_a_missing_file_points_at_the_wav(tmp_path):
    path = write_metadata(tmp_path, "A|x\nB|y\n")
    (tmp_path / "wavs" / "A.flac").write_bytes(b"")
    entries, _ = read_metadata(path, tmp_path / "wavs")
    assert [e.audio_path.name for e in entries] == ["A.flac", "B.wav"]


def test_malformed_lines_duplicates_and_bad_ids_become_failures_with_reasons(tmp_path):
    path = write_metadata(tmp_path, "A|one\nno pipes here\nA|again\n../escape|x\nB|a|b|c\n\nC|fine\n")
    entries, failures = read_metadata(path, tmp_path / "wavs")
    assert [e.id for e in entries] == ["A", "C"]
    assert failures == [
        ("no pipes here", "malformed metadata: line 2 has 1 |-separated fields, expected 2 or 3"),
        ("A", "duplicate id: metadata line 3 repeats it"),
        ("line 4", "malformed metadata: line 4 has the invalid id '../escape'"),
        ("B", "malformed metadata: line 5 has 4 |-separated fields, expected 2 or 3"),
    ]


def test_byte_order_mark_and_windows_line_ends_are_tolerated(tmp_path):
    path = write_metadata(tmp_path, "A|one\r\nB|two\r\n", encoding="utf-8-sig")
    entries, failures = read_metadata(path, tmp_path / "wavs")
    assert [(e.id, e.text) for e in entries] == [("A", "one"), ("B", "two")]


def test_a_missing_metadata_file_is_a_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="metadata file not found"):
        read_metadata(tmp_path / "nope.csv", tmp_path)


def test_split_is_a_pure_function_of_ids_and_seed():
    ids = [f"U{i:03d}" for i in range(100)]
    split = random_split(ids, seed=7, val_fraction=0.1, val_count=None)
    assert sum(s == "val" for s in split.values()) == 10
    assert random_split(list(reversed(ids)), seed=7, val_fraction=0.1, val_count=None) == split
    assert random_split(ids, seed=8, val_fraction=0.1, val_count=None) != split


def test_val_count_wins_over_val_fraction():
    split = random_split([f"U{i}" for i in range(20)], seed=0, val_fraction=0.5, val_count=3)
    assert sorted(split.values()).count("val") == 3


@pytest.mark.parametrize("fraction, count, reason", [
    (1.0, None, r"val_fraction must be in \[0, 1\)"),
    (-0.1, None, r"val_fraction must be in \[0, 1\)"),
    (0.1, 20, r"val_count must be in \[0, 20\) for 20 utterances"),
])
def test_impossible_split_sizes_are_refused_naming_the_reason(fraction, count, reason):
    with pytest.raises(ValueError, match=reason):
        random_split([f"U{i}" for i in range(20)], seed=0, val_fraction=fraction, val_count=count)
