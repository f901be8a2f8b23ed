"""Shared bits for stage commands: params and options, profile, summary and metrics printers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.table import Table

from pipeline.core.config import load_params, section
from pipeline.core.io import save_json
from pipeline.core.profiles import Profile, get_profile
from pipeline.core.progress import console

REPORTS = Path("reports")

# Not a param: the worker count never changes a stage's outputs, so it must not rerun one.
WORKERS_HELP = "parallel workers; default $DFE_WORKERS or all cores (outputs do not depend on it)"


def params_and_profile() -> tuple[dict[str, Any], Profile]:
    params = load_params()
    return params, get_profile(params.get("profile", "small"))


def stage_params(name: str) -> dict[str, Any]:
    return section(load_params(), name)


def report(stage: str, summary: dict[str, Any], reasons: dict[str, int] | None = None) -> None:
    """Print a summary table and write reports/<stage>.json (a DVC metrics file)."""
    table = Table(title=f"{stage}", show_header=False)
    for k, v in summary.items():
        table.add_row(k, str(v))
    for reason, n in (reasons or {}).items():
        table.add_row(f"  rejected: {reason}", str(n))
    console.print(table)
    save_json(REPORTS / f"{stage}.json", {**summary, **({"rejected_reasons": reasons} if reasons else {})})


def section_with_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """params.yaml's `name` section plus the top-level profile, overridden by the command-line
    options that were given (not None)."""
    params = load_params()
    values: dict[str, Any] = dict(params.get(name) or {})
    if "profile" in params:
        values["profile"] = params["profile"]
    values.update({k: v for k, v in given.items() if v is not None})
    return values


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


def fail(error: Exception | str) -> NoReturn:
    """Print a missing-input or bad-value error (they name the stage or file to fix) and exit 2,
    without a traceback."""
    console.print(f"[red]error:[/red] {error}", soft_wrap=True)
    raise typer.Exit(2)
