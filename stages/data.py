"""Data stages: ingest -> landmarks -> align -> sketch -> split -> components, and the sketch report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from pipeline.core.config import pick
from pipeline.core.io import load_npy

from .common import WORKERS_HELP, fail, params_and_profile, report, stage_params

DATA = Path("data")


def _reason_counts(df: pd.DataFrame) -> dict[str, int]:
    rej = df[df["status"] != "ok"]
    # Reasons carry details (sizes, errors); count by their leading words.
    return rej["reason"].str.split(":").str[0].value_counts().to_dict()


def ingest(
    source: Optional[str] = typer.Option(None, help="'london' or a folder of photos (params.yaml: ingest.source)"),
    limit: Optional[int] = typer.Option(None, help="keep the first N identities, 0 = all (params.yaml: ingest.limit)"),
    out: Path = typer.Option(DATA / "ingest", help="output folder"),
    workers: Optional[int] = typer.Option(None, help=WORKERS_HELP),
) -> None:
    """Find and check every photo; list each one as accepted or rejected with its reason."""
    from pipeline.data.ingest import IngestConfig, run_ingest

    p = stage_params("ingest")
    cfg = IngestConfig(
        source=pick(source, p.get("source", "london")),
        identity_pattern=p.get("identity_pattern", IngestConfig.identity_pattern),
        min_side=p.get("min_side", IngestConfig.min_side),
        max_pixels=p.get("max_pixels", IngestConfig.max_pixels),
        limit=pick(limit, p.get("limit", 0)),
    )
    df = run_ingest(cfg, out, workers)
    report("ingest", {"files": len(df), "accepted": int((df.status == "ok").sum()),
                      "rejected": int((df.status != "ok").sum())}, _reason_counts(df))


def landmarks(
    backend: Optional[str] = typer.Option(None, help="auto | dlib | fan (params.yaml: landmarks.backend)"),
    ingest_dir: Path = typer.Option(DATA / "ingest"),
    out: Path = typer.Option(DATA / "landmarks"),
    workers: Optional[int] = typer.Option(None, help=WORKERS_HELP),
) -> None:
    """68-point landmarks for every accepted photo (most confident face; no face -> listed)."""
    from pipeline.data.landmarks import LandmarkConfig, run_landmarks

    p = stage_params("landmarks")
    cfg = LandmarkConfig(
        backend=pick(backend, p.get("backend", "auto")),
        detect_side=p.get("detect_side", 512),
        upsample=p.get("upsample", 0),
        batch_size=p.get("batch_size", LandmarkConfig.batch_size),
        device=p.get("device", "auto"),
    )
    df = run_landmarks(cfg, pd.read_csv(ingest_dir / "manifest.csv", dtype={"id": str, "identity": str}), out,
                       workers=workers)
    ok = df[df.status == "ok"]
    report("landmarks", {
        "photos": len(df), "with_face": len(ok), "rejected": int((df.status != "ok").sum()),
        "several_faces": int((ok.n_faces > 1).sum()),
        "backend": ",".join(sorted(df.backend.unique())) if len(df) else "",
    }, _reason_counts(df))


def align(
    ingest_dir: Path = typer.Option(DATA / "ingest"),
    landmarks_dir: Path = typer.Option(DATA / "landmarks"),
    out: Path = typer.Option(DATA / "aligned"),
    workers: Optional[int] = typer.Option(None, help=WORKERS_HELP),
) -> None:
    """FFHQ-style alignment to the profile's resolution, keeping each photo->face transform."""
    from pipeline.data.align import AlignConfig, run_align

    _, profile = params_and_profile()
    ing = pd.read_csv(ingest_dir / "manifest.csv", dtype={"id": str, "identity": str})
    lm = pd.read_csv(landmarks_dir / "manifest.csv", dtype={"id": str})
    df = run_align(AlignConfig(profile.resolution), ing, lm, load_npy(landmarks_dir / "landmarks.npy"), out, workers)
    report("align", {"faces": int((df.status == "ok").sum()), "resolution": profile.resolution,
                     "rejected": int((df.status != "ok").sum())}, _reason_counts(df))


def sketches(
    aligned_dir: Path = typer.Option(DATA / "aligned"),
    out: Path = typer.Option(DATA / "sketches"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | auto (params.yaml: sketches.device)"),
    workers: Optional[int] = typer.Option(None, help=WORKERS_HELP),
) -> None:
    """Hand-drawn-style sketches of the aligned faces (long smooth strokes, not edge maps)."""
    from pipeline.data.sketches import run_sketch

    p = stage_params("sketches")
    summary = run_sketch(p, aligned_dir, out, device=pick(device, p.get("device", "auto")), workers=workers)
    report("sketches", summary)


def sketch_report(
    aligned_dir: Path = typer.Option(DATA / "aligned"),
    sketch_dir: Path = typer.Option(DATA / "sketches"),
    faces: Optional[int] = typer.Option(None, help="faces measured (params.yaml: sketch_report.faces)"),
    resolution: Optional[int] = typer.Option(
        None, help="also re-align and sketch them at this size; 0 = off (params.yaml: sketch_report.resolution)"),
    picture: Path = typer.Option(Path("reports/sketch_vs_canny.png"), help="face | Canny | ours PNG (a DVC plot)"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | auto (params.yaml: sketches.device)"),
    workers: Optional[int] = typer.Option(None, help=WORKERS_HELP),
) -> None:
    """Stroke continuity of the sketches against OpenCV Canny on the same faces: mean stroke
    length and fragments per face."""
    from pipeline.data.sketch_report import run_sketch_report

    p, sp = stage_params("sketch_report"), stage_params("sketches")
    rp = {"faces": pick(faces, p.get("faces", 16)), "resolution": pick(resolution, p.get("resolution", 256))}
    for needed in (aligned_dir / "images.npy", sketch_dir / "sketches.npy"):
        if not needed.exists():
            fail(f"{needed} is missing: build it first (`dvc repro sketch`)")
    try:
        summary = run_sketch_report(rp, sp, aligned_dir, sketch_dir, picture,
                                    device=pick(device, sp.get("device", "auto")), workers=workers)
    except ValueError as e:  # stale sketches; names the file and the fix
        fail(e)
    report("sketch_report", summary)


def split(
    aligned_dir: Path = typer.Option(DATA / "aligned"),
    out: Path = typer.Option(DATA / "split"),
) -> None:
    """Train/val/test split by identity (seeded)."""
    from pipeline.data.split import run_split

    params, _ = params_and_profile()
    p = stage_params("split")
    df = run_split(pd.read_csv(aligned_dir / "manifest.csv", dtype={"id": str, "identity": str}),
                   p.get("test_fraction", 0.2), p.get("seed", params.get("seed", 0)), out,
                   p.get("val_fraction", 0.0))
    report("split", {k: int(v) for k, v in df.split.value_counts().items()}
           | {"identities": int(df.identity.nunique())})


def components(
    aligned_dir: Path = typer.Option(DATA / "aligned"),
    sketch_dir: Path = typer.Option(DATA / "sketches"),
    split_dir: Path = typer.Option(DATA / "split"),
    out: Path = typer.Option(DATA / "components"),
    sheet: Path = typer.Option(Path("reports/contact_sheet.png"), help="contact sheet PNG (a DVC plot)"),
) -> None:
    """Crop the part boxes from photos and sketches, packed per split; draw the contact sheet."""
    from pipeline.data.components import contact_sheet, run_components

    _, profile = params_and_profile()
    man = pd.read_csv(aligned_dir / "manifest.csv", dtype={"id": str, "identity": str})
    images, sketches = load_npy(aligned_dir / "images.npy"), load_npy(sketch_dir / "sketches.npy")
    counts = run_components(man, images, sketches, pd.read_csv(split_dir / "split.csv", dtype={"id": str, "identity": str}),
                            profile.resolution, out)
    contact_sheet(images, sketches, profile.resolution, sheet, n=stage_params("components").get("sheet_faces", 16))
    report("components", counts | {"resolution": profile.resolution})
