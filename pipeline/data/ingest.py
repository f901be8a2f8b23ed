"""ingest: find the photos, check each one robustly, and list every file with its status.

Sources: the London set (local copy via $DFE_LONDON_DIR, or a verified download from its
public record) or any folder of photos. Nothing is copied: the manifest records where each
accepted photo lives; later stages decode from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.core.io import ImageDecodeError, check_image, save_csv
from pipeline.core.parallel import thread_map
from pipeline.core.progress import console

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}

LONDON_ENV = "DFE_LONDON_DIR"
LONDON_DEFAULT_DIR = Path("data/external/london-faces")
LONDON_ARTICLE_API = "https://api.figshare.com/v2/articles/5047666"
LONDON_DOI = "10.6084/m9.figshare.5047666"

MANIFEST_COLUMNS = [
    "id", "identity", "label", "path", "width", "height", "status", "reason",
    "age", "gender", "ethnicity",
]


@dataclass(frozen=True)
class IngestConfig:
    source: str = "london"  # 'london' or a folder of photos
    identity_pattern: str = r"^(\d+)_"  # regex on the file stem; group 1 = identity
    min_side: int = 128
    max_pixels: int = 80_000_000
    limit: int = 0  # 0 = all photos; >0 keeps the first N identities (CI and micro runs)


def resolve_london_dir(download_to: Path = LONDON_DEFAULT_DIR) -> Path:
    """The London set's folder: $DFE_LONDON_DIR, else a previous download, else download it."""
    env = os.environ.get(LONDON_ENV)
    if env:
        path = Path(env)
        if not (path / "neutral").is_dir():
            raise FileNotFoundError(
                f"${LONDON_ENV}={env} has no neutral/ folder; point it at the London set "
                "(neutral/NNN_03.jpg, smiling/NNN_08.jpg, info.csv)"
            )
        return path
    if (download_to / "neutral").is_dir():
        return download_to
    return download_london(download_to)


def download_london(dest: Path, api_url: str = LONDON_ARTICLE_API, timeout: float = 60) -> Path:
    """Download the set from its public record, checking every file against the record's MD5.

    Keeps the neutral (_03) and smiling (_08) frontal photos and the attribute table.
    """
    console.print(f"downloading the London set (DOI {LONDON_DOI}) into {dest} ...")
    try:
        with urllib.request.urlopen(api_url + "/files", timeout=timeout) as r:
            files = json.load(r)
    except OSError as e:
        raise RuntimeError(
            f"the London set is not available offline and the download failed ({e}). "
            f"Set {LONDON_ENV} to a local copy, or set ingest.source to a folder of photos."
        ) from None
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = dest / ".download" / f["name"]
        _download_verified(f["download_url"], target, f.get("computed_md5") or f.get("supplied_md5"), timeout)
        if target.suffix == ".zip":
            _extract_london_zip(target, dest)
        elif target.suffix == ".csv":
            os.replace(target, dest / "info.csv")
    if not (dest / "neutral").is_dir():
        raise RuntimeError(f"downloaded the record {api_url} but found no frontal photos in it")
    return dest


def _download_verified(url: str, target: Path, md5: str | None, timeout: float) -> None:
    if md5 is None:
        raise RuntimeError(f"the record lists no checksum for {target.name}; refusing to trust it")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and _md5(target) == md5:
        return
    tmp = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:
        while chunk := r.read(1 << 20):
            out.write(chunk)
    got = _md5(tmp)
    if got != md5:
        tmp.unlink()
        raise RuntimeError(f"{target.name}: checksum mismatch (got {got}, record says {md5})")
    os.replace(tmp, target)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _extract_london_zip(zip_path: Path, dest: Path) -> None:
    pattern = re.compile(r"(\d{3})_(03|08)\.jpg$")
    with zipfile.ZipFile(zip_path) as z:
        for name in z.namelist():
            m = pattern.search(name)
            if not m:
                continue
            sub = "neutral" if m.group(2) == "03" else "smiling"
            out = dest / sub / Path(name).name
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as src:
                data = src.read()
            tmp = out.with_suffix(".part")
            tmp.write_bytes(data)
            os.replace(tmp, out)


def list_photos(root: Path) -> list[Path]:
    """Every file under root (hidden files skipped); non-images are listed later with a reason."""
    files = [
        p for p in sorted(root.rglob("*"))
        if (p.is_file() or p.is_symlink()) and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.name not in {"info.csv", "ATTRIBUTION.md", "LICENSE-CC-BY-4.0.md", "README.md"}
    ]
    return files


def _london_attributes(root: Path) -> dict[str, dict]:
    info = root / "info.csv"
    if not info.exists():
        return {}
    df = pd.read_csv(info, dtype={"face_id": str})
    return {
        str(r.face_id).zfill(3): {"age": r.face_age, "gender": r.face_gender, "ethnicity": r.face_eth}
        for r in df.itertuples()
    }


def _label(path: Path, root: Path) -> str:
    """Attribute label from the first folder level (London: neutral / smiling)."""
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else ""


def run_ingest(cfg: IngestConfig, out_dir: Path, workers: int | None = None) -> pd.DataFrame:
    """List every photo under the source as accepted or rejected with its reason; checks on
    `workers` threads (None: $DFE_WORKERS or all cores)."""
    root = resolve_london_dir() if cfg.source == "london" else Path(cfg.source)
    if not root.is_dir():
        raise FileNotFoundError(
            f"ingest.source={cfg.source!r} is not a folder; set it to a folder of face photos "
            f"or to 'london' (with ${LONDON_ENV} pointing at a local copy when offline)"
        )
    attrs = _london_attributes(root)
    pattern = re.compile(cfg.identity_pattern) if cfg.identity_pattern else None
    files = list_photos(root)
    ids = photo_ids(files, root)  # over every file, so `limit` never changes a kept photo's id
    if cfg.limit > 0:
        identities = sorted({_identity(p, root, pattern) for p in files})[: cfg.limit]
        keep = set(identities)
        files = [p for p in files if _identity(p, root, pattern) in keep]

    def inspect(path: Path) -> dict:
        identity = _identity(path, root, pattern)
        row = {
            "id": ids[path],
            "identity": identity,
            "label": _label(path, root),
            "path": str(path.resolve()),
            "width": 0, "height": 0, "status": "ok", "reason": "",
            **attrs.get(identity, {"age": None, "gender": None, "ethnicity": None}),
        }
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            row.update(status="rejected", reason=f"not an image file type ({path.suffix or 'no suffix'})")
        else:
            try:
                # Headers, size limits and a complete stream, without decoding a whole JPEG
                # (io.check_image); the decoding stages list a stream that breaks mid-way.
                width, height = check_image(path, cfg.max_pixels, cfg.min_side)
                row.update(width=width, height=height)
            except ImageDecodeError as e:
                row.update(status="rejected", reason=str(e))
        return row

    rows = thread_map(inspect, files, "ingest: checking photos", workers)
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    save_csv(out_dir / "manifest.csv", df)
    return df


def photo_ids(files: list[Path], root: Path) -> dict[Path, str]:
    """A unique id per file, stable across runs: it depends on the set of files only, not on
    their order or on the machine.

    A photo's id is its path under root without the extension, folders joined by `__`
    (London: `neutral__001_03`). Where that would name two files alike, ignoring case (the same
    stem in two formats `face.jpg` / `face.png`, names differing in case only `A.jpg` / `a.JPG`,
    folder and file names that join alike `a/b__c.jpg` / `a__b/c.jpg`), each of them keeps its
    extension (`face.jpg`, `face.png`), and ids still alike get `~` and 8 hex digits of their
    exact relative path's MD5 (`A.jpg~1a2b3c4d`). Ids are compared ignoring case so that they
    stay distinct as file names on any file system."""
    rel = {p: p.relative_to(root) for p in files}
    ids = {p: "__".join(r.with_suffix("").parts) for p, r in rel.items()}
    for clash in _alike(ids):
        ids.update({p: "__".join(rel[p].parts) for p in clash})
    for clash in _alike(ids):
        ids.update({p: f"{ids[p]}~{hashlib.md5(rel[p].as_posix().encode()).hexdigest()[:8]}" for p in clash})
    left = _alike(ids)
    assert not left, f"photo ids still collide: {left[:1]}"  # distinct paths have distinct hashes
    return ids


def _alike(ids: dict[Path, str]) -> list[list[Path]]:
    """Groups of files whose ids are equal ignoring case."""
    groups: dict[str, list[Path]] = {}
    for p, i in ids.items():
        groups.setdefault(i.casefold(), []).append(p)
    return [g for g in groups.values() if len(g) > 1]


def _identity(path: Path, root: Path, pattern: re.Pattern | None) -> str:
    if pattern is not None:
        m = pattern.search(path.stem)
        if m:
            return m.group(1)
    rel = path.relative_to(root)
    # Folder-per-person datasets: the folder names the person; else each photo is its own.
    return rel.parts[-2] if len(rel.parts) > 1 and not pattern else path.stem
