"""benchmarks/gpu_check.py is the first GPU run's script, so it must work before a GPU is lent: on the CPU
at toy sizes every check it can make there passes, and the CUDA-only ones say so."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_the_gpu_check_runs_on_the_cpu_at_toy_sizes(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {measure: (value, outcome) for measure, value, _, outcome in json.loads((tmp_path / "table.json").read_text())}
    assert {outcome for _, outcome in rows.values()} <= {"pass", ""}
    assert rows["encoder output and decoder step state under bf16 autocast: dtypes"] == ("float32", "pass")
    assert rows["HiFi-GAN v1 on the GPU against the CPU"][0] == "needs CUDA"
    assert rows["wav written"][1] == "pass"
