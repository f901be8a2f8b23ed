"""The data benchmark runs end to end on a few London photos and prints both yardsticks.

Its figures back the README's data-half table; this keeps the command from rotting. It checks
what the output says, never how fast anything was.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_models import PROFILE, models  # noqa: F401  (fixture)

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


def test_dtype_benchmark_prints_every_path_and_its_psnr():
    out = subprocess.run([sys.executable, "-m", "benchmarks.dtype", "--profile", "micro", "--iters", "1"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert re.search(r"^fp32\s+\d+\.\d\d\s+1\.00\s+\d+\.\d\d\s+1\.00\s+-$", text, re.M), text
    row = r"\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d\s+(\d+\.\d|inf) dB$"
    m = re.search(r"^bf16" + row, text, re.M)
    assert m and float(m.group(1)) > 20, text
    for path in ("fp32 channels_last", "fp32, fast convs"):  # the same arithmetic in another layout / algorithm
        m = re.search("^" + re.escape(path) + row, text, re.M)
        assert m and (m.group(1) == "inf" or float(m.group(1)) > 60), (path, text)
    for path in ("bf16 fusion net only", "bf16 part generators only", "bf16 fusion + bg generator", "bf16-mixed"):
        m = re.search("^" + re.escape(path) + row, text, re.M)
        assert m and (m.group(1) == "inf" or float(m.group(1)) > 20), (path, text)
    # whole commands: shared work gives each render's own output, and the own-colour sketch
    # edit fuses twice, not three times
    shared = r"\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d) of (\d)\s+(identical|DIFFER)\b"
    rows = {name: re.search("^" + re.escape(name) + shared, text, re.M)
            for name in ("dfe edit -s (own colours)", "dfe edit -s -a OTHER", "dfe edit -a OTHER")}
    assert all(rows.values()), text
    assert all(m.group(6) == "identical" for m in rows.values()), text
    assert rows["dfe edit -s (own colours)"].group(4, 5) == ("2", "3"), text
    assert rows["dfe edit -a OTHER"].group(4, 5) == ("2", "2"), text


def test_dtype_benchmark_convs_times_each_fast_convolution_on_its_edit_input():
    """--convs: one row per kind and shape of the convolutions models.fastconv swapped, as an
    edit feeds them; at the small profile its 256-channel latents are below Winograd's size,
    so each says it ran oneDNN's kernel, exactly (the error of fp32 against float64)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.dtype", "--profile", "small", "--convs", "--iters", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = re.findall(r"^WinogradConv2d\s+(\(1, 256, \d+, \d+\))\s+\(256, 256, 3, 3\)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+"
                      r"\s+(\S+)  \(below its size: oneDNN\)$", out.stdout, re.M)
    assert rows, out.stdout
    assert sum(int(calls) for _, calls, _ in rows) >= 10, rows  # every residual block's two convolutions, per part
    assert all(float(err) < 1e-5 for *_, err in rows), rows


def test_dtype_benchmark_isa_reruns_itself_on_the_kernels_of_another_cpu():
    """--isa avx2: a child process with oneDNN and ATen held to AVX2 prints the table (bf16
    emulated there), saying so in its first line; --path keeps fp32 and the paths named."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.dtype", "--profile", "micro", "--iters", "1", "--isa", "avx2",
                          "--path", "bf16-mixed", "--no-onnx", "--no-commands"], cwd=REPO, capture_output=True, text=True,
                         timeout=300,
                         env={k: v for k, v in os.environ.items()
                              if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")})
    assert out.returncode == 0, out.stderr[-2000:]
    first = out.stdout.splitlines()[0]
    assert ("kernels held to avx2 (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2)"
            in first), first
    assert re.search(r"^bf16-mixed\s+\d+\.\d\d\s+\d+\.\d\d", out.stdout, re.M), out.stdout
    table = out.stdout.split("PSNR vs fp32\n", 1)[1].split("goal", 1)[0]  # --path: fp32 and the one asked for
    assert [line.split()[0] for line in table.splitlines()] == ["fp32", "bf16-mixed"], table


def test_dtype_benchmark_alone_times_first_and_later_edits_per_process():
    """--alone --path fast: fp32 eager and fast convolutions (what dfe edit runs on a CPU), each in a
    fresh process, the first edit and a later one as ratios to eager's, and the PSNR."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.dtype", "--profile", "micro", "--alone", "--warmup", "1",
                          "--iters", "1", "--path", "fast"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout.split("PSNR vs fp32\n", 1)[1].split("goal", 1)[0].splitlines()
    assert [line[:36].strip() for line in table] == ["fp32 eager", "fp32, fast convs, reused (dfe edit)"], table
    assert re.match(r"^fp32 eager\s+\d+\.\d\d\s+1\.00\s+\d+\.\d\d\s+1\.00\s+-$", table[0]), table
    # the micro nets have no convolution wide enough: the same output, bit for bit
    assert re.search(r"\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d\s+inf dB$", table[1]), table


def test_dtype_benchmark_layers_measures_each_convolution_alone_in_bf16():
    """--layers: one row per convolution of the edit (each alone in bf16), marked where
    bf16-mixed puts it in bf16 (residual blocks of the part nets, the fusion net), then the sums."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.dtype", "--profile", "micro", "--layers"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = re.findall(r"^(\S+)\s+(\d+\.\d{3})\s+(\d+\.\d)\s+(\d+\.\d)\s*(yes)?$", out.stdout, re.M)
    marked = {name: bool(yes) for name, *_, yes in rows}
    assert marked["image_encoder.model.1"] is False and marked["fusion.model.1"] is True, out.stdout
    assert any(".conv_block." in n and m for n, m in marked.items() if n.startswith("generator")), out.stdout
    assert not any(n.startswith("sketch_encoder") for n in marked), out.stdout  # geometry from a photo here
    assert sum(float(mse) > 0 for _, mse, *_ in rows) > len(rows) // 2, out.stdout  # bf16 really ran
    sums = re.findall(r"^(in bf16-mixed|kept in fp32): summed MSE (\d+\.\d\d)", out.stdout, re.M)
    assert [k for k, _ in sums] == ["in bf16-mixed", "kept in fp32"], out.stdout
    total = {k: float(v) for k, v in sums}
    assert abs(total["in bf16-mixed"] - sum(float(mse) for n, mse, *_ in rows if marked[n])) < 0.01 * len(rows)


def test_dtype_benchmark_on_trained_weights_compares_every_path_with_fp32(models, tmp_path, capsys):
    """--trained: the micro models on a few aligned test faces; every dtype's row, fp32 the
    reference, the bf16 paths near it and not identical (bf16 really ran); train faces unused."""
    import numpy as np
    import pandas as pd

    from benchmarks.dtype import trained_paths

    rng = np.random.default_rng(0)
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    np.save(aligned / "images.npy", rng.integers(0, 256, (5, 128, 128, 3), dtype=np.uint8))
    ids = [f"face{i}" for i in range(5)]
    pd.DataFrame({"row": range(5), "id": ids}).to_csv(aligned / "manifest.csv", index=False)
    pd.DataFrame({"id": ids, "split": ["test", "train", "test", "test", "val"]}).to_csv(tmp_path / "split.csv", index=False)
    trained_paths(str(models), PROFILE, str(aligned), str(tmp_path / "split.csv"), 12)
    text = capsys.readouterr().out
    assert "3 test faces" in text, text
    assert re.search(r"^fp32\s+1\.00\s+-\s+-$", text, re.M), text
    for path in ("bf16-fusion", "bf16-mixed", "bf16"):
        m = re.search(rf"^{path}\s+\d+\.\d\d\s+(\d+\.\d) dB\s+(\d+\.\d) dB$", text, re.M)
        assert m and 25 < float(m.group(2)) <= float(m.group(1)) < 99, (path, text)
    pd.DataFrame({"id": ids, "split": ["train"] * 5}).to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(SystemExit, match="fewer than 2 test faces"):
        trained_paths(str(models), PROFILE, str(aligned), str(tmp_path / "split.csv"), 12)


def test_malloc_benchmark_times_both_allocator_settings_and_checks_the_outputs_match(tmp_path: Path):
    out = subprocess.run([sys.executable, "-m", "benchmarks.malloc", "--profiles", "small", "--small-iters", "2",
                          "--models", str(tmp_path / "none")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "small  system  (random weights): first" in text and "small  reuse   (random weights): first" in text, text
    ratio = re.search(r"small  reuse / system: first edit ([0-9.]+)x, later edits ([0-9.]+)x; took effect: (\w+); "
                      r"same output: (\w+)", text)
    assert ratio, text
    assert float(ratio[1]) > 0 and float(ratio[2]) > 0
    assert ratio[4] == "True"  # the allocator changes where tensors live, never what they hold
    if sys.platform.startswith("linux"):
        assert ratio[3] == "True"


def test_train_benchmark_compares_paths_and_projects_params_steps():
    """--paths prints each path's ms/step beside fp32's as a ratio and the projection of
    params.yaml's steps; --isa avx2 reruns itself with the kernels held to AVX2 and drops bf16."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.train", "--profile", "micro", "--steps", "2", "--faces",
                          "12", "--batch-size", "2", "--paths", "fp32,channels_last,bf16", "--isa", "avx2"],
                         cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr  # rich's console writes to stderr
    assert "kernels: AVX2 (held to AVX2)" in text and "bf16 dropped" in text, text[:500]
    m = re.search(r"│\s+all\s+│\s+│\s+(\d+)\s+│\s+(\d+)\s+│\s+(\d+\.\d\d)x\s+│", text)
    assert m, text
    assert float(m.group(3)) == pytest.approx(int(m.group(1)) / int(m.group(2)), abs=0.02)
    proj = re.search(r"fp32 (\d+\.\d) min, channels_last (\d+\.\d) min", text)
    assert proj and float(proj.group(1)) > 0, text


def test_paper_cost_projection_follows_flops_steps_and_the_gpu():
    """GPU hours = steps x global batch x FLOPs per image / (utilisation x peak), summed over
    parts; memory per GPU extrapolated from micro-batches 1 and 2, less the idle interpreter."""
    from benchmarks.train_cost import GPUS, projection

    rows = [{"stage": "local", "part": p, "batch": b, "flops_per_image": f, "peak_kind": "rss", "base_bytes": 1e9,
             "peak_bytes": 1e9 + m1 + (b - 1) * per} for p, f, m1, per in (("mouth", 2e12, 4e9, 1e9), ("bg", 6e12, 8e9, 3e9))
            for b in (1, 2)]
    stages = projection(rows, "a100", 0.5, 8, 2, {"local": 1000, "fusion": 10})
    assert [st["stage"] for st in stages] == ["local"]  # fusion was not measured: no row
    expected = 1000 * 8 * (2e12 + 6e12) / (0.5 * GPUS["a100"][1]) / 3600
    assert stages[0]["gpu_hours"] == pytest.approx(expected)
    assert stages[0]["memory_bytes"] == pytest.approx(8e9 + 3e9)  # bg, the larger, at 2 images per GPU


def test_paper_cost_measures_one_stage_alone_on_untrained_upstream_weights(tmp_path: Path):
    """--stages local: the stages local loads are exported untrained first, so it is measured
    (without them the run fails on the missing image encoder) and its rows are written out."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.train_cost", "--profile", "micro", "--stages", "local",
                          "--parts", "mouth", "--batches", "1", "--steps", "1", "--out", str(tmp_path / "cost.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "cost.json").read_text())["rows"]
    assert [(r["stage"], r["part"], r["batch"]) for r in rows] == [("local", "mouth", 1)], out.stdout + out.stderr
    assert rows[0]["s_per_step"] > 0 and rows[0]["flops_per_image"] > 0


def test_measured_projection_sums_parts_at_the_per_gpu_batch():
    """On a GPU: the recipe's wall hours = steps x the parts' s/step at the per-GPU batch, one
    part after another; GPU hours = wall x GPUs; rows at other batches and unmeasured stages drop."""
    from benchmarks.train_cost import measured_projection

    rows = [{"stage": "local", "part": p, "batch": b, "s_per_step": t}
            for p, b, t in (("mouth", 1, 0.1), ("bg", 1, 0.2), ("bg", 8, 5.0))]
    stages = measured_projection(rows, per_gpu=1, gpus=8, recipe={"sketch_ae": 10, "local": 36000})
    assert [st["stage"] for st in stages] == ["local"] and stages[0]["parts"] == ["bg", "mouth"]
    assert stages[0]["wall_hours"] == pytest.approx(36000 * 0.3 / 3600)
    assert stages[0]["gpu_hours"] == pytest.approx(8 * 36000 * 0.3 / 3600)


def test_scale_benchmark_makes_distinct_decodable_photos(london: Path, tmp_path: Path):
    import cv2

    from benchmarks.scale import make_photos

    out = make_photos(london, tmp_path / "photos", 4)
    files = sorted(out.glob("*.jpg"))
    assert [f.name for f in files] == ["00000_0.jpg", "00000_1.jpg", "00001_0.jpg", "00001_1.jpg"]
    images = [cv2.imread(str(f)) for f in files]
    assert all(im is not None and 512 <= min(im.shape[:2]) <= 1024 for im in images)
    assert len({im.tobytes()[:4096] for im in images}) == 4
