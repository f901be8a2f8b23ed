"""Shared bits for stage commands: params, profile, and a summary printer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from pipeline.config import load_params, section
from pipeline.io import save_json
from pipeline.profiles import Profile, get_profile
from pipeline.progress import console

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
