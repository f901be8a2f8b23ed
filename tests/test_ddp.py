"""Training on two processes: torchrun (gloo, CPU) against one process, at the micro profile.

Each two-rank run launches `python -m torch.distributed.run --nproc_per_node 2` on
tests/ddp_worker.py, which runs a stage's real entry point and reports, per rank, digests of
every trained module and optimiser; tests/ddp_audit/sitecustomize.py records the files each
rank writes.

What is proven (README "Training", "Full scale on GPU"):
- after the run both ranks hold the same weights and optimiser states;
- `batch_size` is the global batch: two ranks with half of it each train on exactly the faces
  one process draws, and log the same (rank-averaged) losses. With augmentation off they
  follow one process's loss curve within LOSS_RTOL; not bit for bit, because the two halves'
  gradients are averaged in another order than one batch's (float rounding, then Adam);
- only rank 0 writes weights, checkpoints, dvclive metrics and sample pictures;
- a two-rank run killed after a checkpoint resumes on two ranks to the uninterrupted run's
  weights bit for bit; a one-process checkpoint resumes on two ranks;
- `dfe train-<stage>` with train.nproc 2 relaunches itself under torchrun.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.data.loader import synthetic_components
from pipeline.training.loop import TrainConfig
from tests.helpers_models import single_thread, tiny_models  # noqa: F401  (autouse fixture)

REPO = Path(__file__).resolve().parents[1]
PROFILE = "micro"
BATCH = 4  # global: one process trains on 4 faces a step, each of two ranks on 2
# Two ranks against one, augmentation off, fp32, a few micro steps: every training and val loss
# term agrees to this relative error. Measured: 1e-7 at step 1, at most 1e-5 by step 4 (Adam
# amplifies the rounding); GAN runs drift apart further over thousands of steps, as any two
# runs with other float rounding do.
LOSS_RTOL = 1e-4

UPSTREAM = {"sketch_ae": (), "image_encoder": ("sketch_ae",), "local": ("image_encoder",),
            "fusion": ("image_encoder", "local")}
TRAINED = {"sketch_ae": {"sketch_encoder", "sketch_decoder"}, "image_encoder": {"image_encoder"},
           "local": {"generator", "discriminator"}, "fusion": {"fusion", "discriminator"}}
OPTIMIZERS = {"sketch_ae": {"autoencoder"}, "image_encoder": {"image_encoder"},
              "local": {"generator", "discriminator"}, "fusion": {"fusion", "discriminator"}}


@pytest.fixture(scope="module")
def components(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp_data")
    synthetic_components(root / "components", 128, n_train=8, n_val=2, n_test=2, seed=0,
                         aligned_dir=root / "aligned")
    return root


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """One-step micro weights of every stage (tests/helpers_models): the frozen inputs."""
    return tiny_models(tmp_path_factory)


def part_of(stage: str) -> str:
    return "fusion" if stage == "fusion" else "mouth"


def make_root(root: Path, stage: str, upstream: Path) -> Path:
    for s in UPSTREAM[stage]:
        shutil.copytree(upstream / s, root / "models" / s)
    root.mkdir(parents=True, exist_ok=True)
    return root


def cfg_fields(root: Path, data: Path, **kw) -> dict:
    fields = dict(
        profile=PROFILE, steps=3, batch_size=BATCH, lr=1e-3, log_every=1, ckpt_every=2, sample_every=3,
        progress=False, amp=False, augment={"enabled": False}, components=str(data / "components"),
        aligned=str(data / "aligned"), models_dir=str(root / "models"),
        checkpoints_dir=str(root / "checkpoints"), live_root=str(root / "dvclive"),
    )
    return {**fields, **kw}


def train_one_process(stage: str, fields: dict):
    import importlib

    train = getattr(importlib.import_module(f"pipeline.training.train_{stage}"), f"train_{stage}")
    cfg = TrainConfig(stage=stage, part=part_of(stage), **fields)
    return train(cfg) if stage == "fusion" else train(part_of(stage), cfg)


def audit_env(root: Path, out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    path = os.pathsep.join([str(REPO / "tests" / "ddp_audit"), str(REPO), env.get("PYTHONPATH", "")])
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "DFE_NO_PROGRESS": "1",
            "DFE_TEST_AUDIT": str(out), "DFE_TEST_AUDIT_ROOT": str(root)}


def run_two_ranks(root: Path, stage: str, fields: dict, kill: tuple[int, int] | None = None) -> list[dict]:
    """The stage on two torchrun workers in `root`; each rank's report (digests, result, writes)."""
    out = root.parent / f"{root.name}-reports"
    shutil.rmtree(out, ignore_errors=True)
    spec = out / "spec.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"stage": stage, "part": part_of(stage), "cfg": fields, "out": str(out),
                                "kill": kill}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "ddp_worker.py"), str(spec)]
    proc = subprocess.run(cmd, cwd=root, env=audit_env(root, out), capture_output=True, text=True, timeout=600)
    if kill is not None:
        assert proc.returncode != 0, "the killed run finished"
        return []
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    reports = []
    for r in (0, 1):
        report = json.loads((out / f"rank{r}.json").read_text())
        report["writes"] = json.loads((out / f"writes-rank{r}.json").read_text())["writes"]
        reports.append(report)
    return reports


def history(live: Path, metric: str) -> list[tuple[int, float]]:
    """(step, value) rows of a dvclive metric TSV."""
    lines = (live / "plots" / "metrics" / f"{metric}.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    i, j = head.index("step"), head.index(metric.split("/")[-1])
    return [(int(r.split("\t")[i]), float(r.split("\t")[j])) for r in lines[1:]]


def metrics(live: Path, kind: str) -> list[str]:
    return sorted(f"{kind}/{p.stem}" for p in (live / "plots" / "metrics" / kind).glob("*.tsv"))


def assert_same_curves(a: Path, b: Path, steps: list[int], val_steps: list[int]) -> None:
    """Training losses logged at `steps` in both runs, and validation losses (fixed val faces:
    what the trained nets compute) at `val_steps`, agree within LOSS_RTOL."""
    for kind, want in (("loss", steps), ("val", val_steps)):
        names = metrics(a, kind)
        assert names and names == metrics(b, kind), kind
        for name in names:
            ha, hb = history(a, name), history(b, name)
            if kind == "val":  # a run that was resumed also logged val where its first part ended
                ha, hb = [r for r in ha if r[0] in want], [r for r in hb if r[0] in want]
            assert [s for s, _ in ha] == [s for s, _ in hb] == want, name
            for (step, x), (_, y) in zip(ha, hb):
                assert y == pytest.approx(x, rel=LOSS_RTOL, abs=1e-6), (name, step, x, y)


@pytest.mark.parametrize("stage", ["sketch_ae", "image_encoder", "local", "fusion"])
def test_two_ranks_agree_with_each_other_and_with_one_process(stage, tmp_path, components, upstream):
    part = part_of(stage)
    one = make_root(tmp_path / "one", stage, upstream)
    two = make_root(tmp_path / "two", stage, upstream)
    train_one_process(stage, cfg_fields(one, components))
    r0, r1 = run_two_ranks(two, stage, cfg_fields(two, components))

    # Every trained module and optimiser, the same on both ranks.
    assert set(r0["modules"]) == TRAINED[stage] and set(r0["optimizers"]) == OPTIMIZERS[stage]
    assert r0["modules"] == r1["modules"] and r0["optimizers"] == r1["optimizers"]
    # One sampler stream; each rank its own augmentation stream.
    assert r0["sampler"] == r1["sampler"] and r0["rng"] != r1["rng"]
    assert r0["result"]["losses"] == r1["result"]["losses"]  # the global batch's, on both

    # Only rank 0 writes, and it writes every output.
    assert r1["writes"] == []
    written = {w.split(" ", 1)[1] for w in r0["writes"]}
    live = Path("dvclive") / stage / ("" if stage == "fusion" else part)
    for path in (f"models/{stage}/{part}.safetensors", f"models/{stage}/{part}.json",
                 f"checkpoints/{stage}/{part}.pt", live / "metrics.json", live / "plots/images/samples.png"):
        assert str(Path(path)) in written, (path, sorted(written))

    # Same faces per step, losses averaged over ranks: one process's curve.
    assert_same_curves(one / live, two / live, [1, 2, 3], [3])
    # Not the weights element by element: biases ahead of instance norm get zero gradients
    # plus rounding noise, which Adam turns into lr-sized steps of either sign. val/* above
    # compares what the trained nets compute.
    a = load_file(str(one / f"models/{stage}/{part}.safetensors"))
    b = load_file(str(two / f"models/{stage}/{part}.safetensors"))
    assert a.keys() == b.keys()


def test_killed_two_rank_run_resumes_on_two_ranks_exactly(tmp_path, components, upstream):
    """Local stage (swap pairs, two optimisers, augmentation on: every rank's RNG streams must
    resume). Rank 1 is SIGKILLed before step 4, torchrun stops rank 0; the checkpoint of step 2
    is there and no weights. The rerun resumes from it and ends, on both ranks, with the modules,
    optimisers and RNG streams of a run that was never killed."""
    fields = dict(steps=6, ckpt_every=2, sample_every=6, augment={"enabled": True})
    straight = run_two_ranks(make_root(tmp_path / "straight", "local", upstream), "local",
                             cfg_fields(tmp_path / "straight", components, **fields))
    killed = make_root(tmp_path / "killed", "local", upstream)
    run_two_ranks(killed, "local", cfg_fields(killed, components, **fields), kill=(1, 4))
    assert torch.load(killed / "checkpoints/local/mouth.pt", weights_only=True)["step"] == 2
    assert not (killed / "models/local/mouth.safetensors").exists()
    resumed = run_two_ranks(killed, "local", cfg_fields(killed, components, **fields))
    for r in (0, 1):
        assert resumed[r]["result"]["resumed_from"] == 2 and resumed[r]["result"]["steps_run"] == 4
        for key in ("modules", "optimizers", "rng", "sampler"):
            assert resumed[r][key] == straight[r][key], (r, key)
    assert resumed[1]["writes"] == []
    # No duplicate rows from the steps run before the kill.
    assert [s for s, _ in history(killed / "dvclive/local/mouth", "loss/d")] == list(range(1, 7))


def test_one_process_checkpoint_resumes_on_two_ranks(tmp_path, components, upstream):
    """Sketch AE: one process to step 2, then two ranks to step 4 from its checkpoint. The
    sampler state is the global stream's, so the ranks carry on with the faces one process
    would have drawn: their steps 3-4 follow one process's straight run within LOSS_RTOL."""
    straight = make_root(tmp_path / "straight", "sketch_ae", upstream)
    train_one_process("sketch_ae", cfg_fields(straight, components, steps=4, sample_every=4))
    mixed = make_root(tmp_path / "mixed", "sketch_ae", upstream)
    first = train_one_process("sketch_ae", cfg_fields(mixed, components, steps=2, sample_every=4))
    assert first.steps == 2
    r0, r1 = run_two_ranks(mixed, "sketch_ae", cfg_fields(mixed, components, steps=4, sample_every=4))
    assert r0["result"]["resumed_from"] == r1["result"]["resumed_from"] == 2
    assert r0["modules"] == r1["modules"] and r0["optimizers"] == r1["optimizers"]
    live = Path("dvclive/sketch_ae/mouth")
    assert_same_curves(straight / live, mixed / live, [1, 2, 3, 4], [4])


def write_params(root: Path, data: Path, nproc: int) -> None:
    import yaml

    params = {
        "profile": PROFILE, "seed": 0, "lr": 1e-3,
        "train": {"nproc": nproc, "log_every": 1, "ckpt_every": 2, "sample_every": 2, "device": "cpu",
                  "amp": False, "components": str(data / "components")},
        "train_sketch_ae": {"steps": 2, "batch_size": BATCH, "aligned": str(data / "aligned")},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_cli_nproc_relaunches_under_torchrun(tmp_path, components):
    """train.nproc: 2 in params.yaml: `dfe train-sketch-ae` runs itself on two torchrun workers
    (each records its writes), which get the options it was given; rank 0 alone writes the
    weights and prints the result table."""
    write_params(tmp_path, components, nproc=2)
    out = tmp_path / "audit"
    proc = subprocess.run([sys.executable, "-m", "stages.cli", "train-sketch-ae", "--part", "mouth",
                           "--no-augment", "--steps", "3"],
                          cwd=tmp_path, env=audit_env(tmp_path, out), capture_output=True, text=True, timeout=600)
    said = proc.stdout + proc.stderr  # the console is stderr's
    assert proc.returncode == 0, said[-6000:]
    assert "training on 2 processes (torchrun)" in said
    assert said.count("resumed from") == 1  # one result table
    writes = [json.loads((out / f"writes-rank{r}.json").read_text()) for r in (0, 1)]
    assert all("train-sketch-ae" in w["argv"] and "--no-augment" in w["argv"] for w in writes)
    assert writes[1]["writes"] == []
    assert "os.rename models/sketch_ae/mouth.safetensors" in writes[0]["writes"]
    meta = json.loads((tmp_path / "models/sketch_ae/mouth.json").read_text())
    assert meta["config"]["steps"] == 3 and meta["config"]["augment"]["enabled"] is False
    assert set(load_file(str(tmp_path / "models/sketch_ae/mouth.safetensors"))) > set()


def test_cli_nproc_errors_in_one_line(tmp_path, components, monkeypatch):
    from typer.testing import CliRunner

    from stages.cli import app

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, components, nproc=2)
    result = CliRunner().invoke(app, ["train-sketch-ae", "--part", "mouth", "--batch-size", "3"])
    assert result.exit_code == 2 and "batch_size 3 does not split over train.nproc=2 processes" in result.output
    result = CliRunner().invoke(app, ["train-sketch-ae", "--part", "mouth", "--nproc", "0"])
    assert result.exit_code == 2 and "train.nproc must be a whole number >= 1, got 0" in result.output
    assert not (tmp_path / "models").exists()
