"""The `dfe` command line: every DVC stage has its command, and help says where defaults come from."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
WIDE = {"TERMINAL_WIDTH": "240", "COLUMNS": "240"}  # no wrapping inside the help table


def _commands() -> set[str]:
    return {c.name or c.callback.__name__ for c in app.registered_commands}


def test_every_dvc_stage_runs_a_dfe_command():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = (stage.get("do") or stage)["cmd"].split()
        assert cmd[0] == "dfe" and cmd[1] in _commands(), (name, cmd)


def test_help_names_the_param_behind_each_default():
    runner = CliRunner()
    for command, param in [("ingest", "ingest.source"), ("sketch-report", "sketch_report.faces"),
                           ("sketches", "sketches.device"), ("train-local", "lr")]:
        r = runner.invoke(app, [command, "--help"], env=WIDE)
        assert r.exit_code == 0, r.output
        assert f"(params.yaml: {param})" in r.output, r.output  # rich must not eat it as markup


def test_sketch_report_without_sketches_names_the_missing_file(tmp_path):
    r = CliRunner().invoke(app, ["sketch-report", "--aligned-dir", str(tmp_path), "--sketch-dir", str(tmp_path)], env=WIDE)
    assert r.exit_code == 2 and "images.npy is missing" in r.output and "dvc repro sketch" in r.output, r.output
