"""`dfe edit` (edit a photo's face from photos and sketches) and `dfe sketch` (a photo's editable sketch).

Options default to None and fall back to params.yaml: top-level `profile`, the `edit:` section
(models_dir, device, dtype, detect_side, upsample, feather, sketcher) and `sketches.style` (with
randomize=0). Bad inputs and missing weights end with a one-line message naming the file (and
the command that makes missing weights) and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import typer

from pipeline.core.progress import console
from pipeline.editing.compose import ComposeSettings

from .common import DTYPE_HELP, config_from, fail


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
    dtype: str
    runtime: str
    sketcher: str
    render: str
    compose: ComposeSettings = field(default_factory=ComposeSettings)


def _settings(profile: Optional[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """params.yaml `edit:` and `profile` (stages.common.config_from) < the options given."""
    cfg = config_from("edit", EditSettings, profile=profile, **overrides)
    return {**asdict(cfg), "compose": cfg.compose}


def _sketcher(choice: str, models_dir: str) -> tuple[str, str]:
    """(official | synth, why): `auto` takes the authors' photo-to-sketch generator when imported."""
    from pipeline.models.editor import photo_to_sketch_path

    if choice not in ("auto", "official", "synth"):
        fail(f"unknown sketcher {choice!r}; choose official, synth or auto")
    p2s_path = photo_to_sketch_path(models_dir)
    if choice == "auto":
        return ("official", "found") if p2s_path.exists() else ("synth", f"no {p2s_path}")
    return choice, "chosen"


def _own_sketch_fn(choice: str, cfg: dict[str, Any], dev):
    """AlignedFace -> its editable sketch, drawn by `choice` as `dfe sketch` draws it."""
    from pipeline.core.config import resolve_dtype
    from pipeline.data.sketches import SketchesConfig
    from pipeline.editing.edit import draw_face_sketch
    from pipeline.models.editor import load_photo_to_sketch

    style = replace(config_from("sketches", SketchesConfig).style, randomize=0.0)
    p2s = load_photo_to_sketch(cfg["models_dir"], cfg["profile"], dev, resolve_dtype(cfg["dtype"], dev)) \
        if choice == "official" else None
    return lambda face: draw_face_sketch(face, style, dev, p2s)


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
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
    render: Optional[str] = typer.Option(
        None, help="compose: the photo keeps the person, only the edit goes in | full: paste the networks' whole render "
                   "(params.yaml: edit.render; --aligned defaults to full)"),
) -> None:
    """Edit a face: geometry from a photo or sketch, appearance per part from other photos."""
    from pipeline.editing.edit import EditInputError, EditRequest, FaceDetector, run_edit
    from pipeline.core.config import resolve_device
    from pipeline.core.io import save_png

    cfg = _settings(profile, {"models_dir": models_dir, "device": device, "feather": feather, "dtype": dtype,
                              "render": render})
    how = render or ("full" if aligned else cfg["render"])
    req = EditRequest(geometry, appearance, _parse_parts(part_appearance), geometry_sketch, aligned, cfg["feather"], how)
    try:  # missing weights name the stage that makes them; a profile mismatch says so
        dev = resolve_device(cfg["device"])
        from pipeline.editing.colour_norm import load_photo_editor

        editor = load_photo_editor(cfg["models_dir"], cfg["profile"], dev, cfg["dtype"])
        own_sketch = None
        if geometry_sketch is not None and how == "compose":
            # The photo's own sketch, drawn as the edited one was: the record `dfe sketch` left in it.
            from pipeline.core.io import png_text
            from pipeline.editing.edit import SKETCH_RECORD

            record = json.loads(png_text(geometry_sketch).get(SKETCH_RECORD, "{}") or "{}")
            choice, why = _sketcher(record.get("sketcher", cfg["sketcher"]), cfg["models_dir"])
            why = "as recorded in the sketch" if "sketcher" in record else f"no record in the sketch: {why}"
            console.print(f"the photo's own sketch: {choice} ({why})", soft_wrap=True)
            own_sketch = _own_sketch_fn(choice, cfg, dev)
    except (FileNotFoundError, ValueError) as e:
        fail(e)
    try:
        detector = None if aligned else FaceDetector(cfg["upsample"], cfg["detect_side"])
        result = run_edit(req, editor, detector, own_sketch, cfg["compose"])
    except (EditInputError, ValueError) as e:
        fail(e)
    save_png(output, result.image)
    console.print(f"wrote {output} ({result.image.shape[1]}x{result.image.shape[0]})")


def sketch_cmd(
    photo: str = typer.Argument(..., help="photo with a face"),
    output: Path = typer.Option(..., "--output", "-o", help="output PNG"),
    in_photo_frame: bool = typer.Option(False, "--in-photo-frame", help="map the sketch onto the photo's own pixels"),
    profile: Optional[str] = typer.Option(None, help="paper | small | micro: sets the aligned size (params.yaml: profile)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (params.yaml: edit.device)"),
    sketcher: Optional[str] = typer.Option(
        None, help="official: the authors' photo-to-sketch generator (imported) | synth: our sketch synthesis | "
                   "auto: official when MODELS has it (params.yaml: edit.sketcher)"),
    models_dir: Optional[str] = typer.Option(None, "--models", help="weights, for --sketcher official (params.yaml: edit.models_dir)"),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Write a photo's editable sketch (aligned frame, or the photo's frame to draw over)."""
    from pipeline.editing.edit import EditInputError, FaceDetector, photo_sketch
    from pipeline.core.config import resolve_device, resolve_dtype
    from pipeline.core.io import save_png
    from pipeline.core.profiles import get_profile
    from pipeline.data.sketches import SketchesConfig
    from pipeline.models.editor import load_photo_to_sketch, photo_to_sketch_path

    cfg = _settings(profile, {"device": device, "sketcher": sketcher, "models_dir": models_dir, "dtype": dtype})
    style = replace(config_from("sketches", SketchesConfig).style, randomize=0.0)
    p2s_path = photo_to_sketch_path(cfg["models_dir"])
    choice, why = _sketcher(cfg["sketcher"], cfg["models_dir"])
    try:
        dev = resolve_device(cfg["device"])
        p2s = None
        if choice == "official":
            p2s = load_photo_to_sketch(cfg["models_dir"], cfg["profile"], dev, resolve_dtype(cfg["dtype"], dev))
            console.print(f"sketcher: official, the authors' photo-to-sketch generator ({p2s_path}, {why})", soft_wrap=True)
        else:
            console.print(f"sketcher: synth, our sketch synthesis ({why})", soft_wrap=True)
        resolution = get_profile(cfg["profile"]).resolution
        detector = FaceDetector(cfg["upsample"], cfg["detect_side"])
        sketch = photo_sketch(photo, resolution, style, detector, in_photo_frame, dev, photo_to_sketch=p2s)
    except (EditInputError, FileNotFoundError, ValueError) as e:
        fail(e)
    # Recorded in the PNG, so that `dfe edit -s` draws the photo's own sketch the same way.
    from pipeline.editing.edit import SKETCH_RECORD

    record = {"sketcher": choice, "profile": cfg["profile"], "frame": "photo" if in_photo_frame else "aligned"}
    save_png(output, sketch, text={SKETCH_RECORD: json.dumps(record)})
    console.print(f"wrote {output} ({sketch.shape[1]}x{sketch.shape[0]})")
