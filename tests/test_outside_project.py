"""The tools work from any folder: `dfe edit`, `dfe sketch` and `dfe import-official` run in a
folder without params.yaml use the built-in defaults (pipeline/default_params.yaml), with
`--models` pointing at the weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from tests.helpers_models import PROFILE, models, single_thread  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
DFE = str(Path(sys.executable).parent / "dfe")  # the installed entry point, as a user runs it


@pytest.fixture()
def elsewhere(tmp_path) -> tuple[Path, dict]:
    """An empty folder outside the repository, and an environment with no DFE_PARAMS."""
    assert REPO not in tmp_path.parents and not (tmp_path / "params.yaml").exists()
    env = {k: v for k, v in os.environ.items() if k != "DFE_PARAMS"}
    return tmp_path, {**env, "DFE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "240"}


def _dfe(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([DFE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_edit_and_sketch_run_outside_the_project(models, london, elsewhere):
    cwd, env = elsewhere
    geo, app = london / "neutral" / "001_03.jpg", london / "neutral" / "004_03.jpg"
    r = _dfe(["edit", str(geo), "-a", str(app), "-p", f"mouth={london / 'smiling' / '010_08.jpg'}",
              "-o", "edited.png", "--models", str(models), "--profile", PROFILE, "--device", "cpu"], cwd, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrote edited.png (1024x1024)" in r.stdout + r.stderr
    assert cv2.imread(str(cwd / "edited.png")).shape == (1024, 1024, 3)

    r = _dfe(["sketch", str(geo), "-o", "sketch.png", "--profile", PROFILE, "--device", "cpu"], cwd, env)
    assert r.returncode == 0, r.stdout + r.stderr
    sketch = cv2.imread(str(cwd / "sketch.png"), cv2.IMREAD_UNCHANGED)
    assert sketch.shape == (128, 128) and (sketch < 128).mean() > 0.01
    assert sorted(p.name for p in cwd.iterdir()) == ["edited.png", "sketch.png"]  # nothing else written


def test_tools_outside_the_project_end_in_one_line(london, elsewhere):
    """Without --models the default `models` folder is missing there: one line naming the stage
    that makes it, not a params.yaml error. import-official names the files it lacks."""
    cwd, env = elsewhere
    geo = str(london / "neutral" / "001_03.jpg")
    r = _dfe(["edit", geo, "-a", geo, "-o", "x.png", "--device", "cpu"], cwd, env)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2 and "params.yaml" not in out and len(out.splitlines()) == 1, out
    assert out.startswith("error: models/sketch_ae/") and "dvc repro train_sketch_ae@" in out, out
    r = _dfe(["import-official", str(cwd)], cwd, env)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2 and len(out.splitlines()) == 1 and "released checkpoint(s)" in out, out
