"""Data stages: ingest -> landmarks -> align -> sketches -> split -> components, and the sketch report.

Each command: params.yaml's section -> the stage's dataclass (`config_from`; options given
override fields) -> the stage's function, after checking that its inputs exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from pipeline.core.io import load_npy

from .common import WORKERS_HELP, config_from, fail, profile, report, require_inputs

DATA = Path("data")


def _reason_counts(df: pd.DataFrame) -> dict[str, int]:
    rej = df[df["status"] != "ok"]
    # Reasons carry details (sizes, errors); count by their leading words.
    return rej["reason"].str.split(":").str[0].value_counts().to_dict()


def _manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str, "identity": str})


def ingest(
    source: Optional[str] = typer.Option(None, help="'london' or a folder of photos (params.yaml: ingest.source)"),
    limit: Optional[int] = typer.Option(None, help="keep the first N identities, 0 = all (params.yaml: ingest.limit)"),
    out: Path = typer.Option(DATA / "ingest", help="output folder"),
    workers: Optional[int] = typer.Option(None, help=WORKERS_HELP),
) -> None:
    """Find and check every photo; list each one as accepted or rejected with its reason."""
    from pipeline.data.ingest import IngestConfig, resolve_london_dir, run_ingest

    cfg = config_from("ingest", IngestConfig, source=source, limit=limit)
    if cfg.source == "london":
        try:  # $DFE_LONDON_DIR, an earlier download, or a verified download now
            resolve_london_dir()
        except (FileNotFoundError, RuntimeError) as e:
            fail(e)
    elif not Path(cfg.source).is_dir():
        fail(f"{cfg.source} missing: ingest.source must be a folder of photos, or 'london'")
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

    require_inputs({ingest_dir / "manifest.csv": "ingest"})
    cfg = config_from("landmarks", LandmarkConfig, backend=backend)
    df = run_landmarks(cfg, _manifest(ingest_dir / "manifest.csv"), out, workers=workers)
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

    require_inputs({ingest_dir / "manifest.csv": "ingest", landmarks_dir / "manifest.csv": "landmarks",
                    landmarks_dir / "landmarks.npy": "landmarks"})
    cfg = config_from("align", AlignConfig, resolution=profile().resolution)
    df = run_align(cfg, _manifest(ingest_dir / "manifest.csv"), _manifest(landmarks_dir / "manifest.csv"),
                   load_npy(landmarks_dir / "landmarks.npy"), out, workers)
    report("align", {"faces": int((df.status == "ok").sum()), "resolution": cfg.resolution,
                     "rejected": int((df.status != "ok").sum())}, _reason_counts(df))


def sketches(
    aligned_dir: Path = typer.Option(DATA / "aligned"),
    out: Path = typer.Option(DATA / "sketches"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | auto (params.yaml: sketches.device)"),
    workers: Optional[int] = typer.Option(None, help=WORKERS_HELP),
) -> None:
    """Hand-drawn-style sketches of the aligned faces (long smooth strokes, not edge maps)."""
    from pipeline.data.sketches import SketchesConfig, run_sketch

    require_inputs({aligned_dir / "images.npy": "align", aligned_dir / "landmarks.npy": "align"})
    cfg = config_from("sketches", SketchesConfig, device=device)
    report("sketches", run_sketch(cfg, aligned_dir, out, workers=workers))


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
    from pipeline.data.sketch_report import SketchReportConfig, run_sketch_report
    from pipeline.data.sketches import SketchesConfig

    require_inputs({aligned_dir / "images.npy": "align", sketch_dir / "sketches.npy": "sketches"})
    cfg = config_from("sketch_report", SketchReportConfig, faces=faces, resolution=resolution)
    sketch_cfg = config_from("sketches", SketchesConfig, device=device)
    try:
        summary = run_sketch_report(cfg, sketch_cfg, aligned_dir, sketch_dir, picture, workers=workers)
    except ValueError as e:  # stale sketches; names the file and the fix
        fail(e)
    report("sketch_report", summary)


def split(
    aligned_dir: Path = typer.Option(DATA / "aligned"),
    out: Path = typer.Option(DATA / "split"),
) -> None:
    """Train/val/test split by identity (seeded)."""
    from pipeline.data.split import SplitConfig, run_split

    require_inputs({aligned_dir / "manifest.csv": "align"})
    cfg = config_from("split", SplitConfig)
    try:
        df = run_split(_manifest(aligned_dir / "manifest.csv"), cfg.test_fraction, cfg.seed, out, cfg.val_fraction,
                       cfg.train_identities)
    except ValueError as e:  # fractions out of range name their key
        fail(e)
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
    from pipeline.data.components import ComponentsConfig, contact_sheet, run_components

    require_inputs({aligned_dir / "manifest.csv": "align", aligned_dir / "images.npy": "align",
                    sketch_dir / "sketches.npy": "sketches", split_dir / "split.csv": "split"})
    cfg = config_from("components", ComponentsConfig)
    resolution = profile().resolution
    man = _manifest(aligned_dir / "manifest.csv")
    images, sketches = load_npy(aligned_dir / "images.npy"), load_npy(sketch_dir / "sketches.npy")
    counts = run_components(man, images, sketches, _manifest(split_dir / "split.csv"), resolution, out)
    contact_sheet(images, sketches, resolution, sheet, n=cfg.sheet_faces)
    report("components", counts | {"resolution": resolution})


def shifts(
    aligned_dir: Path = typer.Option(DATA / "aligned"),
    split_dir: Path = typer.Option(DATA / "split"),
    out: Path = typer.Option(DATA / "shifted"),
    sheet: Path = typer.Option(Path("reports/shifted_faces.png"), help="faces x shifts PNG (a DVC plot)"),
) -> None:
    """The val and test faces under the shifts of ordinary photos (colour casts, exposure,
    side light, backdrop, blur/JPEG, noise, framing), found and aligned again."""
    from pipeline.core.io import load_npy
    from pipeline.data.shifts import ShiftsConfig, run_shifts, shift_sheet

    require_inputs({aligned_dir / "manifest.csv": "align", aligned_dir / "transforms.npy": "align",
                    split_dir / "split.csv": "split"})
    cfg = config_from("shifts", ShiftsConfig)  # validates: unknown shift names end in one line
    df = run_shifts(cfg, aligned_dir, split_dir / "split.csv", profile().resolution, out)
    rejected = pd.read_csv(out / "rejected.csv")
    if len(df):
        shift_sheet(load_npy(out / "images.npy"), df, sheet)
    report("shifts", {"faces": len(df), "rejected": len(rejected),
                      **{f"{s}_faces": int(n) for s, n in df.groupby("split").size().items()}},
           rejected["reason"].value_counts().to_dict())


def colour_range(
    components_dir: Path = typer.Option(DATA / "components"),
    out: Path = typer.Option(Path("models") / "colour_range.json"),
    k: Optional[float] = typer.Option(None, help="range = mean +- k std of the training faces' colour statistics "
                                                 "(params.yaml: colour_range.k)"),
) -> None:
    """The training faces' light: the range of colour statistics the editors move a photo into
    (editing.colour_norm), beside the models."""
    from pipeline.core.io import load_npy, save_json
    from pipeline.editing.colour_norm import ColourRangeConfig, colour_range as measure

    photos = components_dir / "train" / "bg_photo.npy"
    require_inputs({photos: "components"})
    cfg = config_from("colour_range", ColourRangeConfig, k=k)
    r = measure(load_npy(photos), cfg.k, cfg.k_spread, cfg.trigger, cfg.region, cfg.move_geometry)
    save_json(out, r)
    report("colour_range", {"faces": r["n_faces"], "k": cfg.k, "k_spread": -1 if cfg.k_spread is None else cfg.k_spread,
                                 "trigger": -1 if cfg.trigger is None else cfg.trigger})

