"""The `dfe` command line: every DVC stage has its command, and help says where defaults come from."""

from __future__ import annotations

from pathlib import Path

import pytest
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
    assert r.exit_code == 2 and "images.npy missing" in r.output and "dvc repro align" in r.output, r.output


# Every stage command run before its inputs exist (in an empty folder, so with the built-in
# defaults): exit code 2 and one line naming the missing path and what makes it.
MISSING = {
    "ingest": (["ingest", "--source", "photos"], "photos missing: ingest.source must be a folder of photos"),
    "landmarks": (["landmarks"], "data/ingest/manifest.csv missing: run `dvc repro ingest` (or `dfe ingest`)"),
    "align": (["align"], "data/ingest/manifest.csv missing: run `dvc repro ingest` (or `dfe ingest`)"),
    "sketches": (["sketches"], "data/aligned/images.npy missing: run `dvc repro align` (or `dfe align`)"),
    "sketch_report": (["sketch-report"], "data/aligned/images.npy missing: run `dvc repro align` (or `dfe align`)"),
    "split": (["split"], "data/aligned/manifest.csv missing: run `dvc repro align` (or `dfe align`)"),
    "components": (["components"], "data/aligned/manifest.csv missing: run `dvc repro align` (or `dfe align`)"),
    "train_sketch_ae": (["train-sketch-ae", "--part", "eye1"],
                        "data/components/train/manifest.csv missing: run `dvc repro components` (or `dfe components`)"),
    "train_image_encoder": (["train-image-encoder", "--part", "nose"],
                            "data/components/train/manifest.csv missing: run `dvc repro components`"),
    "train_local": (["train-local", "--part", "mouth"], "data/components/train/manifest.csv missing"),
    "train_fusion": (["train-fusion"], "data/components/train/manifest.csv missing"),
    "evaluate": (["evaluate"],
                 "data/components/test/manifest.csv missing: run `dvc repro components` (or `dfe components`)"),
    "dfi": (["dfi"], "data/aligned/manifest.csv missing: run `dvc repro align` (or `dfe align`)"),
    "shifts": (["shifts"], "data/aligned/manifest.csv missing: run `dvc repro align` (or `dfe align`)"),
    "colour_range": (["colour-range"],
                     "data/components/train/bg_photo.npy missing: run `dvc repro components` (or `dfe components`)"),
}


def _one_line_error(r) -> str:
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return lines[0]


def test_every_dvc_stage_command_is_checked_for_missing_inputs():
    assert set(MISSING) == set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


@pytest.mark.parametrize("stage", sorted(MISSING))
def test_stage_before_its_inputs_ends_in_one_line(stage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DFE_PARAMS", raising=False)
    args, message = MISSING[stage]
    assert message in _one_line_error(CliRunner().invoke(app, args, env=WIDE))
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()  # nothing written


def test_missing_inputs_name_the_stage_that_makes_each(tmp_path, monkeypatch):
    """Past the first input, each missing one names its own maker: landmarks, a part's upstream weights."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DFE_PARAMS", raising=False)
    runner = CliRunner()
    for path in ("data/ingest/manifest.csv", "data/components/train/manifest.csv"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("id\n")
    cases = [
        (["align"], "data/landmarks/manifest.csv missing: run `dvc repro landmarks` (or `dfe landmarks`)"),
        (["train-image-encoder", "--part", "nose"], "models/sketch_ae/nose.safetensors missing: run "
         "`dvc repro train_sketch_ae@nose` (or `dfe train-sketch-ae --part nose`)"),
        (["train-local", "--part", "mouth"], "models/image_encoder/mouth.safetensors missing: run "
         "`dvc repro train_image_encoder@mouth` (or `dfe train-image-encoder --part mouth`)"),
        (["train-fusion"], "models/image_encoder/eye1.safetensors missing: run `dvc repro train_image_encoder@eye1`"),
    ]
    for args, message in cases:
        assert message in _one_line_error(runner.invoke(app, args, env=WIDE)), args


def test_ingest_without_the_london_set_ends_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DFE_PARAMS", raising=False)
    r = CliRunner().invoke(app, ["ingest"], env={**WIDE, "DFE_LONDON_DIR": str(tmp_path / "nowhere")})
    assert f"$DFE_LONDON_DIR={tmp_path / 'nowhere'} has no neutral/ folder" in _one_line_error(r)


# One config pattern: params.yaml section -> dataclass (stages.common.config_from) -> function.

def _stage_configs():
    from pipeline.data.components import ComponentsConfig
    from pipeline.data.ingest import IngestConfig
    from pipeline.data.landmarks import LandmarkConfig
    from pipeline.data.sketch_report import SketchReportConfig
    from pipeline.data.sketches import SketchesConfig
    from pipeline.data.split import SplitConfig
    from pipeline.data.shifts import ShiftsConfig
    from pipeline.dfi.dfi import DFIConfig
    from pipeline.editing.colour_norm import ColourRangeConfig
    from pipeline.evaluation.evaluate import EvalConfig
    from stages.edit import EditSettings

    return {"ingest": IngestConfig, "landmarks": LandmarkConfig, "sketches": SketchesConfig,
            "sketch_report": SketchReportConfig, "split": SplitConfig, "components": ComponentsConfig,
            "evaluate": EvalConfig, "dfi": DFIConfig, "edit": EditSettings, "shifts": ShiftsConfig,
            "colour_range": ColourRangeConfig}


def test_every_params_section_builds_its_stage_config(monkeypatch):
    """Each section of params.yaml goes into its dataclass whole: no key a command would ignore."""
    from pipeline.data.sketch.draw import SketchStyle
    from pipeline.editing.compose import ComposeSettings
    from stages.common import config_from

    monkeypatch.chdir(REPO)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    configs = _stage_configs()
    sections = {k for k, v in params.items() if isinstance(v, dict)}
    assert sections - set(configs) == {"train", "train_sketch_ae", "train_image_encoder", "train_local",
                                       "train_fusion"}  # stages/train.py's _config (tests/test_trainer.py)
    for name, cls in configs.items():
        cfg = config_from(name, cls)
        for key, value in params[name].items():
            got = getattr(cfg, key)
            want = SketchStyle(**value) if key == "style" else ComposeSettings(**value) if key == "compose" else \
                tuple(value) if isinstance(value, list) else value
            assert got == want, (name, key)
        if "profile" in {f for f in cls.__dataclass_fields__}:
            assert cfg.profile == params["profile"], name  # the top level fills what the section leaves out
    assert config_from("split", configs["split"]).seed == params["split"]["seed"]


def test_config_from_options_override_and_unknown_keys_end_in_one_line(tmp_path, monkeypatch, capsys):
    import typer as _typer

    from pipeline.data.sketches import SketchesConfig
    from pipeline.data.split import SplitConfig
    from pipeline.dfi.dfi import DFIConfig
    from stages.common import config_from

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DFE_PARAMS", raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "seed": 7, "profile": "micro",
        "split": {"test_fraction": 0.3},
        "sketches": {"batch_size": 4, "style": {"width": 2.0}},
        "dfi": {"alphas": [0.5, 1.0], "parts": ["mouth"]},
    }))
    # Section < option given; None = not given; the top-level seed where the section has none.
    assert config_from("split", SplitConfig, test_fraction=None, val_fraction=0.1) == SplitConfig(0.3, 0.1, 7)
    sk = config_from("sketches", SketchesConfig, device="cpu")
    assert (sk.batch_size, sk.device, sk.seed, sk.style.width, sk.style.sigma) == (4, "cpu", 7, 2.0, 1.2)
    dfi = config_from("dfi", DFIConfig, max_faces=3)
    assert (dfi.alphas, dfi.parts, dfi.max_faces, dfi.profile) == ((0.5, 1.0), ("mouth",), 3, "micro")
    capsys.readouterr()
    for section, bad, start in [
        ("split", {"tst_fraction": 0.3}, "error: params.yaml: unknown key `split.tst_fraction` (SplitConfig takes "),
        ("sketches", {"style": {"widht": 2.0}}, "error: params.yaml: unknown key `sketches.style.widht`"),
        ("dfi", {"parts": ["ear"]}, "error: dfi.parts ['ear']: choose from"),  # DFIConfig.validate()
    ]:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({section: bad}))
        cls = {"split": SplitConfig, "sketches": SketchesConfig, "dfi": DFIConfig}[section]
        with pytest.raises(_typer.Exit) as e:
            config_from(section, cls)
        assert e.value.exit_code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(start) and "\n" not in err, err
    with pytest.raises(TypeError, match="no fields"):  # an option the dataclass lacks is a bug in the command
        config_from("split", SplitConfig, test_fraction_typo=0.1)


def test_params_from_the_project_else_the_built_in_defaults(tmp_path, monkeypatch):
    import pipeline.core.config as config

    monkeypatch.delenv("DFE_PARAMS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert config.params_file() is None and config.load_params() == config.load_defaults()
    (tmp_path / "params.yaml").write_text("profile: micro\n")
    assert config.params_file() == Path("params.yaml") and config.load_params() == {"profile": "micro"}
    other = tmp_path / "elsewhere.yaml"
    other.write_text("profile: paper\n")
    monkeypatch.setenv("DFE_PARAMS", str(other))
    assert config.load_params() == {"profile": "paper"}
    monkeypatch.setenv("DFE_PARAMS", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=r"nope.yaml \(\$DFE_PARAMS\) not found"):
        config.load_params()


def test_built_in_defaults_equal_params_yaml():
    """pipeline/default_params.yaml is params.yaml's copy: after changing params.yaml, run
    `cp params.yaml pipeline/default_params.yaml`."""
    from pipeline.core.config import DEFAULTS_FILE, load_defaults

    assert DEFAULTS_FILE == REPO / "pipeline" / "default_params.yaml"
    assert load_defaults() == yaml.safe_load((REPO / "params.yaml").read_text())
