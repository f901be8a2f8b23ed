"""`dfe attribute-vector` (an attribute vector from two folders of example photos) and
`dfe attribute` (DFI on any photo along one or more vectors).

Options default to None and fall back to params.yaml: top-level `profile`, the `edit:` section
(models_dir, device, dtype, detect_side, upsample, feather) and the `dfi:` section (parts,
spaces, normalise for learning; classic_k, classic_iters, classic_tv_weight for classic DFI).
Bad inputs (no face, unreadable photo, empty example folder, a vector of another profile,
missing weights) end in one line naming the file and the fix, exit code 2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from pipeline.core.progress import console

from .common import DTYPE_HELP, comma_floats, comma_names, config_from, fail


def _editor(cfg: dict, dtype_name: Optional[str] = None):
    from pipeline.core.config import resolve_device
    from pipeline.editing.colour_norm import load_photo_editor

    dev = resolve_device(cfg["device"])
    return load_photo_editor(cfg["models_dir"], cfg["profile"], dev, dtype_name or cfg["dtype"]), dev


def attribute_vector_cmd(
    with_dir: str = typer.Option(..., "--with", help="folder of photos WITH the attribute (any size; faces are found and aligned)"),
    without_dir: str = typer.Option(..., "--without", help="folder of photos WITHOUT it"),
    output: Path = typer.Option(..., "--output", "-o", help="the vector file (.safetensors)"),
    name: Optional[str] = typer.Option(None, help="the attribute's name [default: the output's stem]"),
    alpha: Optional[float] = typer.Option(None, help="default step recorded in the file [default: 1, the examples' full mean shift]"),
    parts: Optional[str] = typer.Option(None, help="parts an edit moves by default, comma-separated (params.yaml: dfi.parts)"),
    spaces: Optional[str] = typer.Option(None, help="geometry,appearance (params.yaml: dfi.spaces)"),
    normalise: Optional[bool] = typer.Option(None, "--normalise/--no-normalise", help="scale vectors to the mean latent norm (params.yaml: dfi.normalise)"),
    profile: Optional[str] = typer.Option(None, help="paper | small | micro (params.yaml: profile)"),
    models_dir: Optional[str] = typer.Option(None, "--models", help="trained weights (params.yaml: edit.models_dir)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (params.yaml: edit.device)"),
) -> None:
    """Learn an attribute vector from two folders of example photos (fast DFI; classic too when VGG-19 is present)."""
    from pipeline.dfi.dfi import DFIConfig
    from pipeline.dfi.vectors import ExampleFolderError, align_folder, learn_vector, list_photos, save_vector
    from pipeline.editing.edit import FaceDetector
    from pipeline.models.vgg import load_vgg19, vgg_weights_path

    from .edit import _settings

    cfg = _settings(profile, {"models_dir": models_dir, "device": device})
    dcfg = config_from("dfi", DFIConfig, profile=profile, parts=comma_names(parts), spaces=comma_names(spaces),
                       normalise=normalise)
    try:  # the folders first: no model loads for a typo
        for folder, side in ((with_dir, "with"), (without_dir, "without")):
            list_photos(folder, side)
        editor, dev = _editor(cfg, "fp32")
        detector = FaceDetector(cfg["upsample"], cfg["detect_side"])
        examples = {side: align_folder(folder, side, editor.profile.resolution, detector)
                    for folder, side in ((with_dir, "with"), (without_dir, "without"))}
    except (ExampleFolderError, FileNotFoundError, ValueError) as e:
        fail(e)
    vgg = load_vgg19(dev, required=False)
    status = "" if vgg is not None else f"absent: VGG-19 ImageNet weights not found at {vgg_weights_path()}"
    a = 1.0 if alpha is None else alpha
    vector = learn_vector(
        editor, examples, parts=dcfg.parts, spaces=dcfg.spaces, normalise=dcfg.normalise, alpha=a,
        alpha_source="given (--alpha)" if alpha is not None else "default: 1 = the examples' full mean shift",
        alphas=(0.0, a, 2 * a), name=name or output.stem, vgg=vgg, vgg_status=status,
        models_dir=cfg["models_dir"], made_by="dfe attribute-vector")
    save_vector(vector, output)
    for side in ("with", "without"):
        ex = examples[side]
        if ex.skipped:
            first = next(iter(ex.skipped.values()))
            console.print(f"--{side}: skipped {len(ex.skipped)} of {len(ex.skipped) + len(ex)} photos (e.g. {first})",
                          soft_wrap=True)
    console.print(f"wrote {output}: {vector.describe()}", soft_wrap=True)
    if vgg is None:
        console.print("classic DFI: no VGG-19 weights, so no VGG vector; the example faces are kept: "
                      "`dfe attribute --method classic` works once the weights are in place", soft_wrap=True)


def attribute_cmd(
    photo: str = typer.Argument(..., help="photo with a face (any size)"),
    vector: list[str] = typer.Option(..., "--vector", "-v", help="V[:ALPHA]: a vector file and its step; repeat to combine (smile + open mouth)"),
    output: Path = typer.Option(..., "--output", "-o", help="output image (.jpg, .png, ...)"),
    alpha: Optional[float] = typer.Option(None, help="step of every vector given without :ALPHA [default: each vector's recorded alpha]"),
    method: str = typer.Option("fast", help="fast: the learned spaces, one pass | classic: VGG-19 + L-BFGS (needs its weights)"),
    blend: str = typer.Option("change", help="change: add only what the edit changed to the photo (keeps its detail) | face: paste the edited face as dfe edit does"),
    motion: Optional[str] = typer.Option(None, help="fast + change: landmarks: the photo's pixels move by the vector's landmark shift (its examples' mean) | renders: by the flow between the two renders (params.yaml: dfi.motion)"),
    strip: Optional[str] = typer.Option(None, help="alpha sweep, e.g. 0,0.5,1,1.5,2: one labelled image of it (each vector's step = value x its :ALPHA, 1 if none)"),
    strip_out: Optional[Path] = typer.Option(None, help="where the sweep goes [default: OUTPUT's stem + _strip.png]"),
    sketch_out: Optional[Path] = typer.Option(None, help="the edited geometry's editable sketch (PNG; needs sketch decoders)"),
    aligned: bool = typer.Option(False, "--aligned", help="the photo is an aligned face crop; write aligned outputs"),
    profile: Optional[str] = typer.Option(None, help="paper | small | micro (params.yaml: profile)"),
    models_dir: Optional[str] = typer.Option(None, "--models", help="trained weights (params.yaml: edit.models_dir)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (params.yaml: edit.device)"),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
    feather: Optional[float] = typer.Option(None, help="paste-back mask feather (params.yaml: edit.feather)"),
    k: Optional[int] = typer.Option(None, "--k", help="classic: nearest examples per side (params.yaml: dfi.classic_k)"),
    iters: Optional[int] = typer.Option(None, help="classic: L-BFGS iterations (params.yaml: dfi.classic_iters)"),
) -> None:
    """Edit a photo's face along attribute vectors (DFI), pasted back into the photo."""
    started = time.perf_counter()
    from pipeline.dfi.attribute import (BLENDS, METHODS, MOTIONS, AttributeRequest, VectorUse, parse_vector_spec,
                                        run_attribute, save_image)
    from pipeline.dfi.dfi import DFIConfig
    from pipeline.dfi.vectors import VectorFileError, check_fits, load_vector
    from pipeline.editing.edit import EditInputError, FaceDetector

    from .edit import _settings

    if method not in METHODS:
        fail(f"unknown method {method!r}: choose {' or '.join(METHODS)}")
    if blend not in BLENDS:
        fail(f"unknown blend {blend!r}: choose {' or '.join(BLENDS)}")
    if motion is not None and motion not in MOTIONS:
        fail(f"unknown motion {motion!r}: choose {' or '.join(MOTIONS)}")
    sweep = comma_floats(strip, "--strip") or ()
    cfg = _settings(profile, {"models_dir": models_dir, "device": device, "feather": feather, "dtype": dtype})
    dcfg = config_from("dfi", DFIConfig, profile=profile, classic_k=k, classic_iters=iters)
    try:  # vectors first (cheap): a file of another profile fails before any model loads
        uses = []
        for spec in vector:
            path, weight = parse_vector_spec(spec)
            v = load_vector(path)
            if v.profile is not None and v.profile != cfg["profile"]:
                raise VectorFileError(
                    f"{path} was learned with profile {v.profile!r} models, not {cfg['profile']!r}: use --profile "
                    f"{v.profile} with those models, or relearn it with `dfe attribute-vector --profile {cfg['profile']}`")
            uses.append(VectorUse(v, weight))
        editor, dev = _editor(cfg)
        for u in uses:
            warning = check_fits(u.vector, editor, cfg["models_dir"])
            if warning:
                console.print(warning, soft_wrap=True)
        if sketch_out is not None:
            editor.require_sketch_decoder()
        vgg = None
        if method == "classic":
            from pipeline.models.vgg import load_vgg19

            vgg = load_vgg19(dev, required=True)
        detector = FaceDetector(cfg["upsample"], cfg["detect_side"])
        req = AttributeRequest(photo, uses, alpha, method, blend, sweep, aligned, cfg["feather"], sketch_out is not None,
                               dcfg.classic_k, dcfg.classic_iters, dcfg.classic_tv_weight, cfg["compose"],
                               motion or dcfg.motion)
        result = run_attribute(req, editor, detector if not aligned or method == "classic" else None, vgg)
    except (VectorFileError, EditInputError, FileNotFoundError, ValueError) as e:
        fail(e)
    save_image(output, result.image)
    steps = ", ".join(f"{u.vector.name} a={a:g}" for u, a in zip(uses, result.alphas))
    console.print(f"wrote {output} ({result.image.shape[1]}x{result.image.shape[0]}; {steps}; {method})", soft_wrap=True)
    if result.strip is not None:
        where = strip_out or output.with_name(output.stem + "_strip.png")
        save_image(where, result.strip)
        console.print(f"wrote {where} (sweep {', '.join(f'{s:g}' for s in sweep)})", soft_wrap=True)
    if result.sketch is not None and sketch_out is not None:
        save_image(sketch_out, result.sketch)
        console.print(f"wrote {sketch_out} (the edited geometry's sketch)", soft_wrap=True)
    s = result.seconds
    console.print(f"seconds: model {s['model']:.3f}, read+detect+align {s['read_align']:.3f}, paste {s['paste']:.3f}, "
                  f"command {time.perf_counter() - started:.2f}", soft_wrap=True)
