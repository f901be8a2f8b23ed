"""`dfe studio`: the browser face editor (pipeline.editing.studio), models loaded once.

Settings as `dfe edit` / `dfe sketch`: the top-level `profile` and params.yaml `edit:`
(models_dir, device, dtype, detect_side, upsample, feather, sketcher), `sketches.style` with
randomize=0. Without gradio it ends in one line naming the install command (exit code 2).
Missing weights do not stop it: the page opens and says what is missing and which command
makes it, and so does every action there.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from pipeline.core.progress import console

from .common import DTYPE_HELP, config_from, fail

INSTALL = 'pip install -e ".[studio]"'


def _require_gradio() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    try:
        import gradio  # noqa: F401
    except ImportError:
        fail(f"dfe studio needs gradio, which is not installed: run `{INSTALL}` in the dfe checkout")


def set_threads(threads: int, profile: str) -> int:
    """torch's CPU threads for the live preview. One update of a 128 px model is many small
    ops: on a shared 2-core machine one thread ran it in ~85 ms where two took ~1.4 s
    (benchmarks/studio.py), so 0 means one thread for those, torch's default for paper."""
    import torch

    from pipeline.core.profiles import get_profile

    try:
        small = get_profile(profile).resolution <= 128
    except ValueError:
        small = False  # make_studio reports the unknown profile
    n = threads if threads > 0 else (1 if small else torch.get_num_threads())
    torch.set_num_threads(n)
    return n


def make_studio(models_dir: str, profile: str, device: str, dtype: str, sketcher: str, upsample: int,
                detect_side: int, feather: float, faces: Optional[str], vectors: Optional[str], compose_settings=None,
                runtime: str = "torch"):
    """The Studio of these settings; a problem loading the models becomes its page message."""
    import torch

    from pipeline.core.config import resolve_device, resolve_dtype
    from pipeline.data.sketches import SketchesConfig
    from pipeline.editing.edit import FaceDetector
    from pipeline.editing.studio import Studio, find_attribute_vectors, list_faces
    from pipeline.models.editor import load_photo_to_sketch, photo_to_sketch_path

    style = replace(config_from("sketches", SketchesConfig).style, randomize=0.0)
    face_list = list_faces(faces)
    if sketcher not in ("auto", "official", "synth"):
        fail(f"unknown sketcher {sketcher!r}; choose official, synth or auto")
    try:
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        from pipeline.editing.colour_norm import load_photo_editor

        editor = load_photo_editor(models_dir, profile, dev, dtype, runtime)
        p2s = None
        if sketcher == "official" or (sketcher == "auto" and photo_to_sketch_path(models_dir).exists()):
            p2s = load_photo_to_sketch(models_dir, profile, dev, torch_dtype)
    except (FileNotFoundError, ValueError, ImportError) as e:  # ImportError: --runtime onnx without onnxruntime
        console.print(f"[red]models:[/red] {e}", soft_wrap=True)
        return Studio(problem=f"{e}", faces=face_list)
    studio = Studio(editor, FaceDetector(upsample, detect_side), style, dev, p2s, feather, faces=face_list,
                    compose_settings=compose_settings)
    studio.vectors, skipped = find_attribute_vectors(vectors, studio.latent_shapes())
    for line in skipped:
        console.print(f"[yellow]skipped[/yellow] {line}", soft_wrap=True)
    console.print(f"models: {models_dir} ({profile}, {dev}, {runtime}, {torch.get_num_threads()} CPU threads); sketcher: {'official' if p2s is not None else 'synth'}; "
                  f"attribute sliders: {', '.join(v.name for v in studio.vectors) or 'none'}"
                  f"{f' (from {vectors})' if vectors else ''}; faces to pick: {len(face_list)}", soft_wrap=True)
    return studio


def studio_cmd(
    models_dir: Optional[str] = typer.Option(None, "--models", help="trained weights (params.yaml: edit.models_dir)"),
    profile: Optional[str] = typer.Option(None, help="paper | small | micro (params.yaml: profile)"),
    port: int = typer.Option(7860, help="local port"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"),
    share: bool = typer.Option(False, "--share/--no-share", help="also a public gradio.live link (needs internet)"),
    faces: Optional[str] = typer.Option(None, "--faces", help="folder of photos to pick from (default: $DFE_LONDON_DIR)"),
    vectors: Optional[str] = typer.Option(None, "--vectors",
                                          help="folder of attribute vectors, .safetensors (default: outputs/dfi)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (params.yaml: edit.device)"),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
    runtime: Optional[str] = typer.Option(
        None, help="torch | onnx (params.yaml: edit.runtime); onnx: the networks run by ONNX Runtime, CPU fp32 "
                   "(with --dtype bf16-fusion the fusion net stays in PyTorch bf16), faster per stroke once loaded "
                   "(pip install onnx onnxruntime)"),
    sketcher: Optional[str] = typer.Option(None, help="official | synth | auto (params.yaml: edit.sketcher)"),
    open_browser: bool = typer.Option(False, "--open/--no-open", help="open the page in a browser"),
    threads: int = typer.Option(0, help="torch CPU threads; 0: one for the 128 px profiles (small, micro), "
                                        "torch's default for paper"),
) -> None:
    """The face editor in the browser: draw on the sketch, pick appearance per part, slide an attribute."""
    from .edit import EditSettings

    _require_gradio()
    cfg = config_from("edit", EditSettings, profile=profile, models_dir=models_dir, device=device, dtype=dtype,
                      runtime=runtime, sketcher=sketcher)
    set_threads(threads, cfg.profile)
    faces = faces if faces is not None else os.environ.get("DFE_LONDON_DIR")
    vectors = vectors if vectors is not None else ("outputs/dfi" if Path("outputs/dfi").is_dir() else None)
    studio = make_studio(cfg.models_dir, cfg.profile, cfg.device, cfg.dtype, cfg.sketcher, cfg.upsample,
                         cfg.detect_side, cfg.feather, faces, vectors, cfg.compose, cfg.runtime)

    import gradio as gr

    from pipeline.editing.studio import build_app

    app = build_app(studio)
    # System fonts: the page needs nothing from the internet.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    console.print(f"dfe studio on http://{host}:{port} (Ctrl+C stops it)", soft_wrap=True)
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=share, inbrowser=open_browser, theme=theme, ssr_mode=False,
        allowed_paths=[str(studio.out_dir)], quiet=True, show_error=True,
    )
