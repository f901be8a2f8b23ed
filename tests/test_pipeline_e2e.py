"""The real `dvc repro` end to end on a micro profile: a dozen London photos, a few steps a stage.

Catches wiring breaks between dvc.yaml, params.yaml and the stage commands that unit tests
cannot: deps/outs that do not match what a stage writes, a param a stage does not read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

MICRO = {
    "profile": "micro",
    "ingest": {"limit": 6},
    "sketch_report": {"faces": 4, "resolution": 0},
    "split": {"test_fraction": 0.34},
    # three of the twelve shifts (light, camera, framing) keep every shifted path wired at a quarter of the time
    "shifts": {"shifts": ["warm", "blur_jpeg", "framing"]},
    "components": {"sheet_faces": 4},
    "train": {"log_every": 1, "ckpt_every": 2, "sample_every": 2, "augment": {"enabled": True}},
    "train_sketch_ae": {"steps": 3, "batch_size": 4},
    "train_image_encoder": {"steps": 3, "batch_size": 4},
    "train_local": {"steps": 2, "batch_size": 4},
    "train_fusion": {"steps": 2, "batch_size": 2},
    "evaluate": {"grid_faces": 2},
    "dfi": {"classic_k": 1, "classic_faces": 1, "classic_iters": 2, "grid_faces": 2, "shifts": ["warm", "framing"]},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


@pytest.fixture(scope="module")
def project(tmp_path_factory, london: Path) -> tuple[Path, dict]:
    """A fresh copy of the project (tracked and untracked-but-not-ignored files) as its own git repo."""
    root = tmp_path_factory.mktemp("project")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = REPO / f
        if src.is_file():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / f)
    params = _merge(yaml.safe_load((root / "params.yaml").read_text()), MICRO)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "DFE_LONDON_DIR": str(london), "DFE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(["git", "init", "-q"], root, env)
    _run(git + ["add", "-A"], root, env)
    _run(git + ["commit", "-qm", "micro"], root, env)
    _run(["dvc", "repro"], root, env)
    return root, env


def test_repro_builds_everything(project):
    root, _ = project
    ingest = json.loads((root / "reports" / "ingest.json").read_text())
    assert ingest["accepted"] == 12 and ingest["rejected"] == 0
    assert (root / "reports" / "contact_sheet.png").stat().st_size > 0
    for stage in ("sketch_ae", "image_encoder", "local"):
        for part in ("eye1", "eye2", "nose", "mouth", "bg"):
            assert (root / "models" / stage / f"{part}.safetensors").exists(), (stage, part)
            assert (root / "dvclive" / stage / part / "metrics.json").exists()
    assert (root / "models" / "fusion" / "fusion.safetensors").exists()
    # 6 people, 2 photos each: 2 people in test (0.34 of 6), 1 in val; every photo aligned.
    split = json.loads((root / "reports" / "split.json").read_text())
    assert split == {"train": 6, "val": 2, "test": 4, "identities": 6}
    evaluation = json.loads((root / "reports" / "evaluate.json").read_text())
    assert evaluation["n_test"] == 4 and "fid" not in evaluation  # FID/LPIPS: absent, never a string
    assert (root / "reports" / "evaluate" / "swaps.png").exists() and (root / "reports" / "dfi" / "fast.png").exists()
    dfi = json.loads((root / "reports" / "dfi.json").read_text())
    assert (dfi["n_test"], dfi["n_pairs"], dfi["n_train_with"], dfi["n_train_without"]) == (2, 2, 3, 3)
    # the shifted faces reach evaluate, and dfi re-creates its own shifted photos, each with the params' shifts
    shifted = evaluation["shifted"]
    assert sorted(shifted["per_shift"]) == sorted(MICRO["shifts"]["shifts"]) and shifted["n"] == 4 * 3, shifted
    assert sorted(dfi["photo_size_shifted"]["per_shift"]) == sorted(MICRO["dfi"]["shifts"]), dfi["photo_size_shifted"]
    metrics = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=root, capture_output=True, text=True)
    assert metrics.returncode == 0 and "reports/ingest.json" in metrics.stdout


def test_second_repro_does_nothing(project):
    root, env = project
    out = _run(["dvc", "repro"], root, env).stdout
    assert "Running stage" not in out, out


def test_notebook_runs_on_pipeline_outputs(project):
    import nbformat
    from nbclient import NotebookClient

    root, _ = project
    nb = nbformat.read(root / "notebooks" / "walkthrough.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    assert (root / "reports" / "notebook_edit.png").stat().st_size > 0
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "edit differs from the reconstruction by" in printed


@contextlib.contextmanager
def changed_param(root: Path, env: dict, section: str, key: str, value, restore: str):
    """params.yaml's section.key set to value within the block; afterwards the old value is put
    back and `dvc repro <restore>` returns the project to its built state (run cache)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    old = params[section][key]
    params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield
    finally:
        params[section][key] = old
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        _run(["dvc", "repro", restore], root, env)


def _stages_run(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def test_sketch_param_reruns_only_sketch_and_downstream(project):
    root, env = project
    with changed_param(root, env, "sketches", "seed", 7, restore="components"):
        out = _run(["dvc", "repro", "components"], root, env).stdout
        assert _stages_run(out) == {"sketches", "components"}, out
        status = _run(["dvc", "status"], root, env).stdout
        assert "train_sketch_ae@eye1" in status  # training is now out of date: its data changed
        assert not any(f"\n{s}:" in "\n" + status for s in ("ingest", "landmarks", "align", "split")), status


def test_report_param_reruns_only_the_report(project):
    """The continuity report's settings must not invalidate the sketches (and so training)."""
    root, env = project
    with changed_param(root, env, "sketch_report", "faces", 3, restore="sketch_report"):
        out = _run(["dvc", "repro"], root, env).stdout
        assert _stages_run(out) == {"sketch_report"}, out
        assert json.loads((root / "reports" / "sketch_report.json").read_text())["faces"] == 3
        assert (root / "reports" / "sketch_vs_canny.png").stat().st_size > 0


def _exp_rows(shown: list[dict]) -> dict[str, dict]:
    """`dvc exp show --json` rows by name: workspace, the baseline commit and its experiments."""
    rows = {}
    for row in shown:
        rows[row["rev"] if row["rev"] == "workspace" else "baseline"] = row
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                rows[rev["name"]] = rev
    return rows


def _metric_numbers(row: dict) -> dict[str, dict]:
    """Metrics file -> its flat numeric values, of one exp show row."""
    out = {}
    for path, content in (row["data"].get("metrics") or {}).items():
        flat = {}
        stack = [("", content.get("data", {}))]
        while stack:
            prefix, d = stack.pop()
            for k, v in d.items():
                if isinstance(v, dict):
                    stack.append((f"{prefix}{k}.", v))
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    flat[f"{prefix}{k}"] = v
        out[path] = flat
    return out


def test_experiment_compares_with_the_baseline(project, tmp_path):
    """`dvc exp run -S` on the committed micro project, then `dvc exp show`: the baseline commit
    and the experiment both hold their metrics (numbers, not `!`), because the metrics files are
    git-tracked. A copy of the built project, so the other tests keep theirs."""
    built, env = project
    root = tmp_path / "project"
    shutil.copytree(built, root, symlinks=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(git + ["add", "-A"], root, env)
    _run(git + ["commit", "-qm", "baseline: the built micro project"], root, env)
    tracked = set(_run(["git", "ls-files"], root, env).stdout.split())
    assert {"dvc.lock", "reports/evaluate.json", "reports/dfi.json", "dvclive/fusion/metrics.json"} <= tracked
    # Cheap: two more fusion steps than the baseline's two; reruns train_fusion, evaluate and dfi only.
    out = _run(["dvc", "exp", "run", "-S", "train_fusion.steps=4", "-n", "fusion4"], root, env).stdout
    assert _stages_run(out) == {"train_fusion", "evaluate", "dfi"}, out
    rows = _exp_rows(json.loads(_run(["dvc", "exp", "show", "--json"], root, env).stdout))
    assert {"workspace", "baseline", "fusion4"} <= set(rows), list(rows)
    for name in ("baseline", "fusion4"):
        metrics = _metric_numbers(rows[name])
        for path in ("reports/evaluate.json", "reports/dfi.json", "reports/ingest.json", "dvclive/fusion/metrics.json"):
            assert metrics.get(path), (name, path, rows[name]["data"].get("metrics", {}).get(path))
        assert metrics["reports/ingest.json"]["accepted"] == 12, name
        assert metrics["reports/evaluate.json"]["n_test"] == 4, name
    steps = {n: _metric_numbers(rows[n])["dvclive/fusion/metrics.json"]["step"] for n in ("baseline", "fusion4")}
    assert steps == {"baseline": 2, "fusion4": 4}
    params = rows["fusion4"]["data"]["params"]["params.yaml"]["data"]
    assert params["train_fusion"]["steps"] == 4
    # The comparison a person reads (pytest -s shows it): a few columns of each row.
    print(_run(["dvc", "exp", "show", "--no-pager", "--md", "--drop", ".*", "--keep",
                r"Experiment|.*fusion/metrics.json:(step|loss.l1)|recon\.psnr|recon\.ssim|train_fusion\.steps"], root,
               env).stdout)
