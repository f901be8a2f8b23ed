"""`dfe dfi`: attribute edits by fast (learned-space) and classic (VGG-19) DFI on the test split.

Options default to None and fall back to params.yaml: top-level `profile` and the `dfi:`
section (pipeline.dfi.dfi.DFIConfig fields). Writes reports/dfi.json,
reports/dfi/{fast,photo_size,classic}.png and outputs/dfi/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import comma_floats, comma_names, config_from, fail, print_metrics, require_inputs, weights_inputs


def dfi_cmd(
    profile: Optional[str] = typer.Option(None, help="paper | small | micro (params.yaml: profile)"),
    data_dir: Optional[str] = typer.Option(None, "--data", help="holds aligned/ and split/ [default: data]"),
    models_dir: Optional[str] = typer.Option(None, "--models", help="trained weights [default: models]"),
    out_dir: Optional[str] = typer.Option(None, "--out", help="edits as .npy + vectors [default: outputs/dfi]"),
    reports_dir: Optional[str] = typer.Option(None, "--reports", help="dfi.json and dfi/*.png [default: reports]"),
    attribute: Optional[str] = typer.Option(None, help="manifest column (params.yaml: dfi.attribute)"),
    source_value: Optional[str] = typer.Option(None, help="value without the attribute (params.yaml: dfi.source_value)"),
    target_value: Optional[str] = typer.Option(None, help="value with it (params.yaml: dfi.target_value)"),
    alphas: Optional[str] = typer.Option(None, help="fast DFI steps, comma-separated (params.yaml: dfi.alphas)"),
    parts: Optional[str] = typer.Option(None, help="edited parts, comma-separated (params.yaml: dfi.parts)"),
    spaces: Optional[str] = typer.Option(None, help="geometry,appearance (params.yaml: dfi.spaces)"),
    max_faces: Optional[int] = typer.Option(None, help="first N test faces, 0 = all (params.yaml: dfi.max_faces)"),
    classic_faces: Optional[int] = typer.Option(None, help="faces for VGG DFI (params.yaml: dfi.classic_faces)"),
    classic_iters: Optional[int] = typer.Option(None, help="L-BFGS iterations (params.yaml: dfi.classic_iters)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (params.yaml: dfi.device)"),
) -> None:
    """Smile (or any manifest attribute) vectors from the training split; edits and metrics on the test split."""
    from pipeline.core.config import pick
    from pipeline.dfi.dfi import DFIConfig, run_dfi

    data, models = Path(pick(data_dir, "data")), pick(models_dir, "models")
    require_inputs({data / "aligned" / "manifest.csv": "align", data / "aligned" / "images.npy": "align",
                    data / "split" / "split.csv": "split", **weights_inputs(models)})
    cfg = config_from("dfi", DFIConfig, profile=profile, attribute=attribute, source_value=source_value,
                      target_value=target_value, alphas=comma_floats(alphas, "--alphas"), parts=comma_names(parts), spaces=comma_names(spaces),
                      max_faces=max_faces, classic_faces=classic_faces, classic_iters=classic_iters, device=device)
    try:
        metrics = run_dfi(cfg, data, models, pick(out_dir, "outputs/dfi"), pick(reports_dir, "reports"))
    except (FileNotFoundError, ValueError) as e:  # inputs that do not fit name the stage that makes them
        fail(e)
    print_metrics("dfi", metrics)
