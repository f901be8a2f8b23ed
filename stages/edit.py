"""`dfe edit` (edit a photo's face from photos and sketches) and `dfe sketch` (a photo's editable sketch).

Options default to None and fall back to params.yaml: top-level `profile`, the `edit:` section
(models_dir, device, detect_side, upsample, feather) and `sketches.style` (with randomize=0).
Bad inputs end with a one-line message naming the file and exit code 2, never a traceback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

import typer

from pipeline.core.progress import console

from .common import config_from, fail


@dataclass(frozen=True)
class EditSettings:
    """params.yaml `edit:` and the top-level `profile` (outside a project: the built-in
    defaults, pipeline/default_params.yaml); no defaults here, so there is one place for them."""

    profile: str
    models_dir: str
    device: str
    detect_side: int
    upsample: int
    feather: float


def _settings(profile: Optional[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """params.yaml `edit:` and `profile` (stages.common.config_from) < the options given."""
    return asdict(config_from("edit", EditSettings, profile=profile, **overrides))


def _parse_parts(items: list[str]) -> dict[str, str]:
    from pipeline import PARTS

    out = {}
    for item in items:
        part, sep, path = item.partition("=")
        if not sep or part not in PARTS or not path:
            raise typer.BadParameter(f"{item!r}: expected PART=PHOTO with PART one of {', '.join(PARTS)}",
                                     param_hint="--part-appearance")
        out[part] = path
    return out


def edit_cmd(
    geometry: str = typer.Argument(..., help="photo whose face is edited (or an aligned sketch with --aligned)"),
    appearance: str = typer.Option(..., "--appearance", "-a", help="photo giving every part's appearance"),
    part_appearance: list[str] = typer.Option([], "--part-appearance", "-p", help="PART=PHOTO, e.g. mouth=b.jpg (repeatable)"),
    geometry_sketch: Optional[str] = typer.Option(None, "--geometry-sketch", "-s", help="sketch giving the geometry (photo's frame, or aligned with --aligned)"),
    aligned: bool = typer.Option(False, "--aligned", help="inputs are aligned face crops; write the aligned face"),
    output: Path = typer.Option(..., "--output", "-o", help="output PNG"),
    profile: Optional[str] = typer.Option(None, help="paper | small | micro (params.yaml: profile)"),
    models_dir: Optional[str] = typer.Option(None, "--models", help="trained weights (params.yaml: edit.models_dir)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (params.yaml: edit.device)"),
    feather: Optional[float] = typer.Option(None, help="paste-back mask feather, fraction of the face (params.yaml: edit.feather)"),
) -> None:
    """Edit a face: geometry from a photo or sketch, appearance per part from other photos."""
    from pipeline.editing.edit import EditInputError, EditRequest, FaceDetector, run_edit
    from pipeline.core.config import resolve_device
    from pipeline.core.io import save_png
    from pipeline.models.editor import load_editor

    cfg = _settings(profile, {"models_dir": models_dir, "device": device, "feather": feather})
    req = EditRequest(geometry, appearance, _parse_parts(part_appearance), geometry_sketch, aligned, cfg["feather"])
    try:  # missing weights name the stage that makes them; a profile mismatch says so
        editor = load_editor(cfg["models_dir"], cfg["profile"], resolve_device(cfg["device"]))
    except (FileNotFoundError, ValueError) as e:
        fail(e)
    try:
        detector = None if aligned else FaceDetector(cfg["upsample"], cfg["detect_side"])
        result = run_edit(req, editor, detector)
    except EditInputError as e:
        fail(e)
    save_png(output, result.image)
    console.print(f"wrote {output} ({result.image.shape[1]}x{result.image.shape[0]})")


def sketch_cmd(
    photo: str = typer.Argument(..., help="photo with a face"),
    output: Path = typer.Option(..., "--output", "-o", help="output PNG"),
    in_photo_frame: bool = typer.Option(False, "--in-photo-frame", help="map the sketch onto the photo's own pixels"),
    profile: Optional[str] = typer.Option(None, help="paper | small | micro: sets the aligned size (params.yaml: profile)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (params.yaml: edit.device)"),
) -> None:
    """Write a photo's editable sketch (aligned frame, or the photo's frame to draw over)."""
    from pipeline.editing.edit import EditInputError, FaceDetector, photo_sketch
    from pipeline.core.config import resolve_device
    from pipeline.core.io import save_png
    from pipeline.core.profiles import get_profile
    from pipeline.data.sketches import SketchesConfig

    cfg = _settings(profile, {"device": device})
    style = replace(config_from("sketches", SketchesConfig).style, randomize=0.0)
    try:
        resolution = get_profile(cfg["profile"]).resolution
        detector = FaceDetector(cfg["upsample"], cfg["detect_side"])
        sketch = photo_sketch(photo, resolution, style, detector, in_photo_frame, resolve_device(cfg["device"]))
    except (EditInputError, FileNotFoundError, ValueError) as e:
        fail(e)
    save_png(output, sketch)
    console.print(f"wrote {output} ({sketch.shape[1]}x{sketch.shape[0]})")
