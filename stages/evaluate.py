"""`dfe evaluate`: test-split metrics (reports/evaluate.json) and image grids (reports/evaluate/*.png).

Options default to None and fall back to params.yaml: top-level `profile` and the
`evaluate:` section (max_faces, swaps_per_face, grid_faces, batch_size, landmark_upsample, device).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import config_from, fail, print_metrics, require_inputs, weights_inputs


def evaluate_cmd(
    profile: Optional[str] = typer.Option(None, help="paper | small | micro (params.yaml: profile)"),
    models_dir: Optional[str] = typer.Option(None, "--models", help="trained weights [default: models]"),
    components: Optional[str] = typer.Option(None, help="components dir with test/manifest.csv [default: data/components]"),
    aligned: Optional[str] = typer.Option(None, help="aligned faces dir [default: data/aligned]"),
    sketches: Optional[str] = typer.Option(None, help="dataset sketches .npy [default: data/sketches/sketches.npy]"),
    shifted: Optional[str] = typer.Option(None, help="shifted faces dir [default: data/shifted]"),
    metrics_path: Optional[str] = typer.Option(None, "--metrics", help="metrics JSON [default: reports/evaluate.json]"),
    plots_dir: Optional[str] = typer.Option(None, "--plots", help="PNG grids [default: reports/evaluate]"),
    split: Optional[str] = typer.Option(None, help="test (reported) | val (for choosing steps, weights, thresholds) (params.yaml: evaluate.split)"),
    max_faces: Optional[int] = typer.Option(None, help="first N test faces, 0 = all (params.yaml: evaluate.max_faces)"),
    swaps_per_face: Optional[int] = typer.Option(None, help="appearance donors per face (params.yaml: evaluate.swaps_per_face)"),
    grid_faces: Optional[int] = typer.Option(None, help="faces in the grids (params.yaml: evaluate.grid_faces)"),
    batch_size: Optional[int] = typer.Option(None, help="(params.yaml: evaluate.batch_size)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (params.yaml: evaluate.device)"),
) -> None:
    """Reconstruction, swap disentanglement and identity metrics on the test split (or val), beside their nulls."""
    from pipeline.evaluation.evaluate import EvalConfig, evaluate

    cfg = config_from("evaluate", EvalConfig, profile=profile, models_dir=models_dir, components=components,
                      aligned=aligned, sketches=sketches, shifted=shifted, metrics_path=metrics_path, plots_dir=plots_dir,
                      split=split, max_faces=max_faces, swaps_per_face=swaps_per_face, grid_faces=grid_faces,
                      batch_size=batch_size, device=device)
    require_inputs({Path(cfg.components) / cfg.split / "manifest.csv": "components",
                    Path(cfg.aligned) / "images.npy": "align", Path(cfg.sketches): "sketches",
                    **weights_inputs(cfg.models_dir)})
    try:
        metrics = evaluate(cfg)
    except (FileNotFoundError, ValueError) as e:  # inputs that do not fit name the stage that makes them
        fail(e)
    print_metrics("evaluate", metrics)
    from pipeline.core.progress import console
    from pipeline.evaluation.evaluate import null_table_markdown, shifted_table_markdown

    console.print(null_table_markdown(metrics), markup=False, soft_wrap=True)  # each figure beside its nulls
    console.print(shifted_table_markdown(metrics), markup=False, soft_wrap=True)  # out of the studio, per shift
    from pipeline.evaluation.edits import edits_table_markdown

    console.print(edits_table_markdown(metrics), markup=False, soft_wrap=True)  # composed edits against full renders
