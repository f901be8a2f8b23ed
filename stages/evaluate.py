"""`dfe evaluate`: test-split metrics (reports/evaluate.json) and image grids (reports/evaluate/*.png).

Options default to None and fall back to params.yaml: top-level `profile` and the
`evaluate:` section (max_faces, swaps_per_face, grid_faces, batch_size, landmark_upsample, device).
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from pipeline.progress import console


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def evaluate_cmd(
    profile: Optional[str] = typer.Option(None, help="paper | small | micro [params: profile]"),
    models_dir: Optional[str] = typer.Option(None, "--models", help="trained weights [default: models]"),
    components: Optional[str] = typer.Option(None, help="components dir with test/manifest.csv [default: data/components]"),
    aligned: Optional[str] = typer.Option(None, help="aligned faces dir [default: data/aligned]"),
    sketches: Optional[str] = typer.Option(None, help="dataset sketches .npy [default: data/sketch/sketches.npy]"),
    metrics_path: Optional[str] = typer.Option(None, "--metrics", help="metrics JSON [default: reports/evaluate.json]"),
    plots_dir: Optional[str] = typer.Option(None, "--plots", help="PNG grids [default: reports/evaluate]"),
    max_faces: Optional[int] = typer.Option(None, help="first N test faces, 0 = all [params: evaluate.max_faces]"),
    swaps_per_face: Optional[int] = typer.Option(None, help="appearance donors per face [params: evaluate.swaps_per_face]"),
    grid_faces: Optional[int] = typer.Option(None, help="faces in the grids [params: evaluate.grid_faces]"),
    batch_size: Optional[int] = typer.Option(None, help="[params: evaluate.batch_size]"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda [params: evaluate.device]"),
) -> None:
    """Reconstruction, swap disentanglement and identity metrics on the test split."""
    from rich.table import Table

    from pipeline.config import load_params
    from pipeline.evaluate import EvalConfig, evaluate

    params = load_params()
    values: dict[str, Any] = dict(params.get("evaluate") or {})
    if "profile" in params:
        values["profile"] = params["profile"]
    given = dict(profile=profile, models_dir=models_dir, components=components, aligned=aligned,
                 sketches=sketches, metrics_path=metrics_path, plots_dir=plots_dir, max_faces=max_faces,
                 swaps_per_face=swaps_per_face, grid_faces=grid_faces, batch_size=batch_size, device=device)
    values.update({k: v for k, v in given.items() if v is not None})
    unknown = set(values) - set(EvalConfig.__dataclass_fields__)
    if unknown:
        raise typer.BadParameter(f"params.yaml evaluate has unknown keys {sorted(unknown)}")
    try:
        metrics = evaluate(EvalConfig(**values))
    except (FileNotFoundError, ValueError) as e:  # missing inputs name the stage that makes them
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    table = Table(title="evaluate", show_header=False)
    for k, v in _flatten(metrics).items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))  # None = not measurable
    console.print(table)
