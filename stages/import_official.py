"""`dfe import-official DIR`: convert the released DeepFaceEditing checkpoints to our layout."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from pipeline.core.progress import console


def import_official_cmd(
    src: Path = typer.Argument(..., exists=True, file_okay=False, help="folder of the released .pkl checkpoints"),
    out: Path = typer.Option(Path("models/official"), help="output folder (<stage>/<part>.safetensors)"),
    profile: str = typer.Option("paper", help="shapes expected: paper (the release); smaller ones for tests"),
) -> None:
    """Check the released checkpoints against the paper layout and write them as safetensors.

    Files are read with a restricted unpickler that only rebuilds numpy arrays. Use the result
    with `--profile paper --models OUT` (dfe edit, dfe sketch) or `profile: paper` in params.yaml.
    """
    from pipeline.core.profiles import get_profile
    from pipeline.models.official import LayoutError, UnsafePickleError, import_official

    from .common import fail

    try:
        report = import_official(src, out, profile=get_profile(profile))
    except (FileNotFoundError, LayoutError, UnsafePickleError, ValueError) as e:
        fail(e)
    table = Table(title=f"imported into {out}")
    for col in ("file", "from", "tensors", "parameters"):
        table.add_column(col, overflow="fold")  # whole paths, wrapped, on a narrow terminal
    for name, info in report["files"].items():
        table.add_row(name, info["source"], str(info["tensors"]), f"{info['parameters'] / 1e6:.2f} M")
    console.print(table)
    console.print(f"total {report['parameters'] / 1e9:.3f} B parameters, profile {report['profile']}")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    console.print(f"next: dfe edit PHOTO -a OTHER -o OUT.png --profile {report['profile']} --models {out}", soft_wrap=True)
