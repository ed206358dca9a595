"""report.html of `taco inspect-alignment --asr`: one static page to look at and listen to each line,
worst word error rate first. Plots and audio are files beside it, linked by relative paths, so the
folder can be copied or served as it is."""

from __future__ import annotations

from html import escape
from pathlib import Path

from taco.files import replaced_when_written

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 70em; margin: 1em auto; }}
section {{ border-top: 1px solid #ccc; padding: 0.5em 0; }}
img {{ max-width: 100%; }}
td {{ padding: 0 1em 0 0; vertical-align: top; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{summary}</p>
{sections}
</body>
</html>
"""


def write_html_report(path: Path, report: list[dict]) -> None:
    """Write the rows of `report` (of `taco.inspect` with `asr`) that have a WER as a page, highest first
    (a stopped inspection leaves some rows untranscribed)."""
    rows = sorted((row for row in report if "wer" in row), key=lambda row: -row["wer"])
    mean = sum(row["wer"] for row in rows) / max(len(rows), 1)
    summary = f"{len(rows)} lines, mean word error rate {mean:.3f} (free-running, Griffin-Lim, pocketsphinx)"
    sections = "\n".join(_section(row) for row in rows)
    with replaced_when_written(path) as temporary:
        temporary.write_text(_PAGE.format(title="taco: alignment and intelligibility", summary=escape(summary),
                                          sections=sections), encoding="utf-8")


def _section(row: dict) -> str:
    scores = row["scores"]
    facts = [
        ("WER", f"{row['wer']:.3f}"),
        ("reference", row["reference"]),
        ("recognizer heard", row["recognized"] or "(nothing)"),
        ("verdict", f"{row['verdict']} (alignment rank {row['rank']})"),
        ("scores", f"focus rate {scores['focus_rate']:.3f}, coverage {scores['coverage']:.3f}, "
                   f"monotonicity {scores['monotonicity']:.3f}"),
        ("frames", f"{row['frames']}" + (f" (recording {row['target_frames']})" if "target_frames" in row else "")),
    ]
    table = "\n".join(f"<tr><td>{escape(name)}</td><td>{escape(value)}</td></tr>" for name, value in facts)
    players = [f'<p>synthesized <audio controls preload="none" src="{escape(row["audio"])}"></audio>']
    if "recording" in row:
        players.append(f'recording <audio controls preload="none" src="{escape(row["recording"])}"></audio>')
    plot = f'<img src="{escape(row["plot"])}" alt="alignment of {escape(row["id"])}">' if "plot" in row else ""
    return (f'<section id="{escape(row["id"])}">\n<h2>{escape(row["id"])}</h2>\n<table>\n{table}\n</table>\n'
            f"{' '.join(players)}</p>\n{plot}\n</section>")
