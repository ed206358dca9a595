"""What every benchmark prints: the machine's CPU, its timings, and the markdown table with a target column."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor() or "unknown CPU"


def describe_machine() -> str:
    """The header's first line: the cores there are, those this process may use, and the CPU model."""
    return f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {cpu_model()}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the machine was around a measurement."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def describe_times(seconds: list[float]) -> str:
    """The best of repeated timings, then all of them in the order they ran."""
    return f"best {min(seconds):.2f} s of " + ", ".join(f"{value:.2f}" for value in seconds)


def verdict(passed: bool) -> str:
    return "pass" if passed else "FAIL"


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    """Rows of (measure, value, target, result) as an aligned markdown table."""
    header = ("measure", "value", "target", "result")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * width for width in widths), *rows]:
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |")
