"""Speech recognition (taco.pipeline.asr), the intelligibility evaluation and `inspect-alignment --asr`."""

import json
import os
import shutil
import signal
import subprocess

import pytest
import soundfile
from click.testing import CliRunner

from taco.cli import main
from taco.pipeline import inspect as inspect_module
from taco.pipeline.asr import reference_words, word_edits, word_error_rate
from taco.pipeline.html_report import write_html_report


def test_word_edits_count_substitutions_insertions_and_deletions_exactly():
    reference = "the cat sat on the mat".split()
    assert word_edits(reference, reference) == 0
    assert word_edits(reference, "the cat sat on a mat".split()) == 1  # substitution
    assert word_edits(reference, "the big cat sat on the mat".split()) == 1  # insertion
    assert word_edits(reference, "the cat on the mat".split()) == 1  # deletion
    assert word_edits(reference, "a cat sat the mat today".split()) == 3  # one of each
    assert word_edits(reference, []) == 6 and word_edits([], ["a", "b"]) == 2


def test_word_error_rate_is_total_edits_over_total_reference_words():
    references = ["the cat sat".split(), "hello".split()]
    hypotheses = ["the cat sat down".split(), "yellow".split()]
    result = word_error_rate(references, hypotheses)
    assert (result["edits"], result["words"]) == (2, 4)
    assert result["wer"] == pytest.approx(0.5)  # not the mean of 1/3 and 1/1
    assert [row["wer"] for row in result["per_utterance"]] == pytest.approx([1 / 3, 1.0])
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(references, hypotheses[:1])


def test_reference_words_are_the_cleaned_text_without_punctuation():
    assert reference_words('Mr. Smith paid $5, "didn\'t" he?') == ["mister", "smith", "paid", "five", "dollars",
                                                                  "didn't", "he"]


def flite(tmp_path, text, voice="slt"):
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed")
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    return soundfile.read(path, dtype="float32")


@pytest.fixture(scope="module")
def recognizer():
    pytest.importorskip("pocketsphinx")
    from taco.pipeline.asr import Recognizer

    return Recognizer()


def test_the_recognizer_understands_a_flite_sentence_at_any_rate(recognizer, tmp_path):
    import soxr

    wave, rate = flite(tmp_path, "The quick brown fox jumps over the lazy dog.")
    assert recognizer.transcribe(wave, rate) == "the quick brown fox jumps over the lazy dog".split()
    # at the corpus rate it is resampled back to the recognizer's 16 kHz
    assert recognizer.transcribe(soxr.resample(wave, rate, 22050), 22050)[:3] == ["the", "quick", "brown"]
    assert recognizer.transcribe(wave[:0], rate) == []  # a line that stopped after one frame says nothing


def test_a_transcript_does_not_depend_on_the_utterance_before_it(recognizer, tmp_path):
    from taco.pipeline.asr import Recognizer

    first = flite(tmp_path, "Each version of the License is given a distinguishing version number.", voice="kal16")
    second = flite(tmp_path, "She sells sea shells by the sea shore.")
    alone = Recognizer().transcribe(*second)
    recognizer.transcribe(*first)
    assert recognizer.transcribe(*second) == alone


def test_out_of_vocabulary_lists_the_words_the_dictionary_lacks(recognizer):
    assert recognizer.out_of_vocabulary([["the", "zzyzxq"], ["dog", "zzyzxq", "qwxvbn"]]) == ["qwxvbn", "zzyzxq"]


def test_the_evaluation_scores_all_four_sources_of_the_validation_lines(recognizer, micro_checkpoint, small_store):
    from taco.pipeline.intelligibility import SOURCES, evaluate_intelligibility, format_intelligibility

    result = evaluate_intelligibility(micro_checkpoint, small_store, device="cpu", recognizer=recognizer)
    assert result["utterances"] == 2 and set(result["wer"]) == set(SOURCES)
    # the barely trained model says nothing the recognizer understands; the flite recordings it mostly
    # understands (pocketsphinx's WER on the bundled corpus is about 0.17)
    assert result["wer"]["recordings"] < 0.9 <= result["wer"]["free_running"]
    assert result["hit_step_limit"] <= 2 and result["duration_ratio"] > 0
    for row in result["rows"]:
        assert row["reference"] and all(f"{source}_wer" in row for source in SOURCES)
    assert "| recordings |" in format_intelligibility(result)


def test_scoring_over_seeds_gives_each_seed_its_own_evaluation_after_the_one_already_made(monkeypatch):
    from taco.pipeline import intelligibility
    from taco.pipeline.synth import SynthConfig

    calls = []

    def evaluate(checkpoint, store, *, sources, config, **options):
        calls.append((checkpoint, store, sources, config.seed, options))
        return {"seed": config.seed}

    monkeypatch.setattr(intelligibility, "evaluate_intelligibility", evaluate)
    first = {"seed": 5}
    runs = intelligibility.evaluate_seeds("model.pt", "store", 3, sources=("free_running",),
                                          config=SynthConfig(seed=5), first=first, device="cpu")
    assert runs == [first, {"seed": 6}, {"seed": 7}] and runs[0] is first
    assert calls == [("model.pt", "store", ("free_running",), seed, {"device": "cpu"}) for seed in (6, 7)]
    assert intelligibility.evaluate_seeds("model.pt", "store", 2) == [{"seed": 0}, {"seed": 1}]


def test_inspect_asr_adds_words_and_wer_and_writes_a_listenable_report(recognizer, micro_checkpoint, small_store,
                                                                       tmp_path):
    out = tmp_path / "alignment"
    args = ["inspect-alignment", str(micro_checkpoint), "--store", str(small_store), "--split", "val", "--asr",
            "--device", "cpu", "-o", str(out)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    header = (out / "report.tsv").read_text().splitlines()[0].split("\t")
    assert header[-2:] == ["wer", "recognized"]
    scores = json.loads((out / "scores.json").read_text())
    assert len(scores) == 2
    page = (out / "report.html").read_text()
    for row in scores:
        assert 0 <= row["wer"] and row["reference"]
        assert (out / row["audio"]).is_file() and (out / row["recording"]).is_file() and (out / row["plot"]).is_file()
        assert f'src="{row["audio"]}"' in page and f'src="{row["recording"]}"' in page
    # the split's word error rate, over all its words
    edits = sum(word_edits(row["reference"].split(), row["recognized"].split()) for row in scores)
    words = sum(len(row["reference"].split()) for row in scores)
    assert f"word error rate of the synthesized lines (pocketsphinx): {edits / words:.1%} of {words} words" in result.output


def test_an_inspection_stopped_while_recognizing_reports_the_lines_heard(micro_checkpoint, small_store, tmp_path,
                                                                         monkeypatch):
    class StopOnTheSecondLine:
        """A recognizer that hears "hello" and is stopped (Ctrl-C) while transcribing the second line."""

        heard = 0

        def transcribe(self, wave, sample_rate):
            StopOnTheSecondLine.heard += 1
            if StopOnTheSecondLine.heard == 2:
                os.kill(os.getpid(), signal.SIGINT)
            return ["hello"]

    monkeypatch.setattr(inspect_module, "Recognizer", StopOnTheSecondLine)
    out = tmp_path / "alignment"
    args = ["inspect-alignment", str(micro_checkpoint), "--store", str(small_store), "--split", "val", "--asr",
            "-o", str(out), "--max-decoder-steps", "30"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 130, result.output
    assert result.output.splitlines()[-1] == (f"interrupted by SIGINT; the report in {out} covers the 2 of 2 "
                                              "utterances inspected before it (1 transcribed, 0 plotted)")
    # both lines keep their scores; only the first has what the recognizer heard
    first, second = json.loads((out / "scores.json").read_text())
    assert first["recognized"] == "hello" and "wer" not in second and second["scores"]["verdict"]
    assert [line.split("\t")[-2:] for line in (out / "report.tsv").read_text().splitlines()] == [
        ["wer", "recognized"], [f"{first['wer']:.3f}", "hello"], ["", ""]]
    page = (out / "report.html").read_text()
    assert f'src="{first["audio"]}"' in page and "1 lines" in page
    assert sorted(path.name for path in out.glob("*.wav")) == [first["audio"]]


def test_the_listening_page_puts_the_worst_word_error_rate_first_and_escapes_the_text(tmp_path):
    def row(name, wer, reference):
        return {"id": name, "wer": wer, "reference": reference, "recognized": "", "verdict": "ok", "rank": 1,
                "frames": 10, "audio": f"{name}.wav",
                "scores": {"focus_rate": 0.5, "coverage": 1.0, "monotonicity": 1.0}}

    page_path = tmp_path / "report.html"
    write_html_report(page_path, [row("low", 0.2, "fine"), row("high", 0.9, "a <b> tag"), row("mid", 0.5, "so so")])
    page = page_path.read_text()
    sections = [page.index(f'<section id="{name}">') for name in ("high", "mid", "low")]
    assert sections == sorted(sections)
    assert "a &lt;b&gt; tag" in page and "<b>" not in page
    assert "3 lines, mean word error rate 0.533" in page


def test_inspect_asr_without_pocketsphinx_is_one_line(micro_checkpoint, small_store, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # import pocketsphinx now raises ImportError
    args = ["inspect-alignment", str(micro_checkpoint), "--store", str(small_store), "--split", "val", "--asr",
            "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.output.strip() == "Error: speech recognition needs pocketsphinx: pip install -e '.[bench]'"
