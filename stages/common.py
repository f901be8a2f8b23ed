"""Shared bits for stage commands: their one config pattern, input checks, profile, summary
and metrics printers.

Every command builds its settings one way, `config_from`: params.yaml's section for it -> the
stage's dataclass -> the function, with the command-line options that were given overriding
fields. Every stage command first checks its inputs with `require_inputs`, so that a stage run
before the one that makes its inputs ends in one line naming the missing path and that stage.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from pipeline import PARTS
from pipeline.core.config import load_params, params_source
from pipeline.core.io import save_json
from pipeline.core.profiles import Profile, get_profile
from pipeline.core.progress import console

REPORTS = Path("reports")

# Not a param: the worker count never changes a stage's outputs, so it must not rerun one.
WORKERS_HELP = "parallel workers; default $DFE_WORKERS or all cores (outputs do not depend on it)"
DTYPE_HELP = ("bf16 | bf16-fusion | bf16-mixed | fp32 | auto: bf16-fusion on CUDA, fp32 on CPU (params.yaml: edit.dtype); "
              "bf16-fusion: only the fusion net in bf16 (CUDA, and CPUs with native bf16); bf16-mixed: also the part "
              "nets' residual blocks (CPUs with AMX: under half fp32's time at about 41 dB)")

T = TypeVar("T")


def params() -> dict[str, Any]:
    """params.yaml (or the built-in defaults outside a project); a bad file ends in one line."""
    try:
        return load_params()
    except (OSError, ValueError) as e:
        fail(e)


def profile(name: str | None = None) -> Profile:
    """The profile named (a --profile option), else params.yaml's top-level `profile`."""
    try:
        return get_profile(name or params().get("profile", "small"))
    except (KeyError, ValueError) as e:
        fail(e)


def config_from(section: str | None, cls: type[T], /, **overrides: Any) -> T:
    """`cls` built from params.yaml: the `section` mapping, over top-level keys that are fields
    of `cls` (profile, seed) where the section leaves them out; the options given (not None)
    override both.

    A section key that `cls` has no field for ends the command in one line naming the params
    file and the key. Dataclass-typed fields (sketches.style) are built the same way from their
    mapping, lists become tuples where a field is a tuple, and a `validate()` method runs."""
    p, where = params(), params_source()
    names = _field_names(cls)
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")  # a bug in the command, not in params
    values = {k: v for k, v in p.items() if k in names and not isinstance(v, dict)}
    if section is not None:
        own = p.get(section) or {}
        if not isinstance(own, Mapping):
            fail(f"{where}: `{section}` must be a mapping of settings, got {own!r}")
        values.update(own)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return _build(cls, values, where, f"{section}." if section else "")
    except (TypeError, ValueError) as e:
        fail(e)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _build(cls: type[T], values: Mapping[str, Any], where: str, prefix: str) -> T:
    names = _field_names(cls)
    for key in values:
        if key not in names:
            raise ValueError(f"{where}: unknown key `{prefix}{key}` ({cls.__name__} takes {', '.join(sorted(names))})")
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = _build(hint, value, where, f"{prefix}{key}.")
        elif isinstance(value, list) and (hint is tuple or typing.get_origin(hint) is tuple):
            value = tuple(value)
        out[key] = value
    try:
        obj = cls(**out)
    except TypeError as e:  # a setting without a default that the section leaves out
        raise ValueError(f"{where}: `{prefix.rstrip('.') or 'top level'}`: {e}") from None
    if callable(getattr(obj, "validate", None)):
        obj.validate()
    return obj


def require_inputs(inputs: Mapping[str | Path, str]) -> None:
    """End the command in one line, exit code 2, at the first input path that does not exist,
    naming it and what makes it. `inputs`: path -> the DVC stage that makes it (`ingest`,
    `train_local@mouth`)."""
    for path, stage in inputs.items():
        if not Path(path).exists():
            fail(f"{path} missing: run `dvc repro {stage}` (or `{dfe_command(stage)}`)")


def dfe_command(stage: str) -> str:
    """The dfe command of a DVC stage: train_local@mouth -> dfe train-local --part mouth."""
    name, _, part = stage.partition("@")
    return f"dfe {name.replace('_', '-')}" + (f" --part {part}" if part else "")


def weights_inputs(models_dir: str | Path, stages: tuple[str, ...] = ("sketch_ae", "image_encoder", "local", "fusion"),
                   parts: tuple[str, ...] = PARTS) -> dict[Path, str]:
    """models_dir/<stage>/<part>.safetensors -> the training stage that writes it."""
    out: dict[Path, str] = {}
    for stage in stages:
        for part in ("fusion",) if stage == "fusion" else parts:
            out[Path(models_dir) / stage / f"{part}.safetensors"] = (
                "train_fusion" if stage == "fusion" else f"train_{stage}@{part}")
    return out


def require_training_inputs(cfg: Any) -> None:
    """A training stage's inputs (cfg: pipeline.training.loop.TrainConfig): the components and
    the weights of the stages before it."""
    upstream = {"sketch_ae": (), "image_encoder": ("sketch_ae",), "local": ("image_encoder",),
                "fusion": ("image_encoder", "local")}[cfg.stage]
    parts = PARTS if cfg.stage == "fusion" else (cfg.part,)
    require_inputs({Path(cfg.components) / "train" / "manifest.csv": "components",
                    **weights_inputs(cfg.models_dir, upstream, parts)})


def report(stage: str, summary: dict[str, Any], reasons: dict[str, int] | None = None) -> None:
    """Print a summary table and write reports/<stage>.json (a DVC metrics file)."""
    table = Table(title=f"{stage}", show_header=False)
    for k, v in summary.items():
        table.add_row(k, str(v))
    for reason, n in (reasons or {}).items():
        table.add_row(f"  rejected: {reason}", str(n))
    console.print(table)
    save_json(REPORTS / f"{stage}.json", {**summary, **({"rejected_reasons": reasons} if reasons else {})})


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for k, v in flatten(metrics).items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))  # None = not measurable
    console.print(table)


def comma_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    """`--alphas 0,0.5,1` -> (0.0, 0.5, 1.0); None stays None (params.yaml decides)."""
    if text is None:
        return None
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: want numbers separated by commas, e.g. 0,0.5,1", param_hint=what) from None
    if not values:
        raise typer.BadParameter(f"{text!r}: no numbers", param_hint=what)
    return values


def comma_names(text: str | None) -> list[str] | None:
    """`--parts mouth, nose` -> ["mouth", "nose"]; None stays None."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def fail(error: Exception | str) -> NoReturn:
    """Print a missing-input or bad-value error (they name the stage or file to fix) and exit 2,
    without a traceback."""
    console.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
    raise typer.Exit(2)
