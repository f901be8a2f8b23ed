"""`dfe`: one command per DVC stage, plus the editing tools. Defaults come from params.yaml."""

from __future__ import annotations

import typer

from . import attribute, data, dfi, edit, evaluate, import_official, studio, train

app = typer.Typer(
    name="dfe",
    help="Sketch-based face editing (DeepFaceEditing) and Deep Feature Interpolation as a DVC pipeline.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def _process() -> None:
    # Every command: large tensors reuse freed memory instead of faulting in fresh pages
    # (pipeline.core.memory; DFE_MALLOC=system turns it off).
    from pipeline.core.memory import reuse_freed_memory

    reuse_freed_memory()


for _name, _fn in [
    ("ingest", data.ingest),
    ("landmarks", data.landmarks),
    ("align", data.align),
    ("sketches", data.sketches),
    ("sketch-report", data.sketch_report),
    ("split", data.split),
    ("components", data.components),
    ("shifts", data.shifts),
    ("colour-range", data.colour_range),
    ("train-sketch-ae", train.train_sketch_ae_cmd),
    ("train-image-encoder", train.train_image_encoder_cmd),
    ("train-local", train.train_local_cmd),
    ("train-fusion", train.train_fusion_cmd),
    ("evaluate", evaluate.evaluate_cmd),
    ("dfi", dfi.dfi_cmd),
    ("edit", edit.edit_cmd),
    ("sketch", edit.sketch_cmd),
    ("attribute-vector", attribute.attribute_vector_cmd),
    ("attribute", attribute.attribute_cmd),
    ("import-official", import_official.import_official_cmd),
    ("studio", studio.studio_cmd),
]:
    app.command(_name)(_fn)

if __name__ == "__main__":
    app()
