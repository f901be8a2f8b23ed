"""The data benchmark runs end to end on a few London photos and prints both yardsticks.

Its figures back the README's data-half table; this keeps the command from rotting. It checks
what the output says, never how fast anything was.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_data_benchmark_prints_every_stage_and_both_ratios(london: Path):
    env = {**os.environ, "DFE_LONDON_DIR": str(london)}
    out = subprocess.run([sys.executable, "-m", "benchmarks.data", "--n", "4", "--repeat", "1"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert text.startswith("4 photos"), text[:200]
    one_worker, defaults = text.split("\n1 worker\n", 1)[1].split("\ndefault (", 1)
    for config, block in (("1 worker", one_worker), ("defaults", defaults)):
        for stage in ("ingest", "landmarks", "align", "sketch", "split", "components", "detect alone", "whole build"):
            assert re.search(rf"^{re.escape(stage)}\s+\d+\.\d\d", block, re.M), (config, stage, block[:800])
    for yardstick in ("the landmarks stage", "detection alone"):
        ratios = re.findall(rf"whole build / {yardstick}, run by run: (\d+\.\d\d) \(median", text)
        assert len(ratios) == 2 and all(float(r) > 0 for r in ratios), (yardstick, text[-800:])
        if yardstick == "the landmarks stage":  # the build contains that stage, and more
            assert all(float(r) > 1.0 for r in ratios), text[-800:]


def test_dtype_benchmark_prints_both_dtypes_and_the_psnr():
    out = subprocess.run([sys.executable, "-m", "benchmarks.dtype", "--profile", "micro", "--iters", "1"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert re.search(r"^fp32\s+\d+\.\d\d\s+1\.00\s+\d+\.\d\d\s+1\.00\s+-$", text, re.M), text
    m = re.search(r"^bf16\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d\s+(\d+\.\d|inf) dB$", text, re.M)
    assert m and float(m.group(1)) > 20, text
