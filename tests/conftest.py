"""Shared fixtures: the London set (read in place, never copied into the repo) and awkward files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DFE_NO_PROGRESS", "1")


def london_dir() -> Path:
    env = os.environ.get("DFE_LONDON_DIR")
    # Absolute: the end-to-end tests run dvc in a copy of the project elsewhere.
    return Path(env).resolve() if env else REPO.parent / "shared" / "datasets" / "london-faces"


@pytest.fixture(scope="session")
def london() -> Path:
    path = london_dir()
    if not (path / "neutral").is_dir():
        pytest.fail(f"London set not found at {path}: set DFE_LONDON_DIR (CI uses ../shared/datasets/london-faces)")
    return path


def _jpeg(img: np.ndarray, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def awkward_dir(tmp_path_factory, london: Path) -> Path:
    """A folder with every kind of file a user's photo folder holds, faces and non-faces.

    Expected outcome per file is encoded in its name: ok_* are accepted photos with one face,
    two_faces_* has two, noface_* decodes but has no face, bad_* must be rejected by ingest,
    broken_* passes ingest's check (whole headers, complete stream) and fails its first decode.
    Some names collide as ids would: one stem in two formats, names that differ in case only,
    the same file name in nested folders, a folder and a file name that join alike (AWKWARD_IDS).
    """
    from PIL import Image

    d = tmp_path_factory.mktemp("awkward")
    face = np.asarray(Image.open(london / "neutral" / "001_03.jpg").convert("RGB").resize((512, 512)))
    face2 = np.asarray(Image.open(london / "neutral" / "004_03.jpg").convert("RGB").resize((512, 512)))

    (d / "ok_plain.jpg").write_bytes(_jpeg(face))
    Image.fromarray(face).convert("L").save(d / "ok_gray.png")
    Image.fromarray((face[..., 0].astype(np.uint16) * 257)).save(d / "ok_16bit.png")
    assert Image.open(d / "ok_16bit.png").mode.startswith("I")
    Image.fromarray(face).convert("CMYK").save(d / "ok_cmyk.jpg", "JPEG")
    Image.fromarray(face).convert("P", palette=Image.ADAPTIVE, colors=255).save(d / "ok_palette.png")
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    rgba[:20, :20, 3] = 0
    Image.fromarray(rgba, "RGBA").save(d / "ok_rgba.png")
    # Stored turned on its side with EXIF orientation 6: only an EXIF-aware decoder finds the face.
    exif = Image.Exif()
    exif[0x0112] = 6
    (d / "ok_exif_rotated.jpg").write_bytes(_jpeg(np.ascontiguousarray(np.rot90(face, 1)), exif=exif.tobytes()))
    (d / "two_faces.jpg").write_bytes(_jpeg(np.concatenate([face, face2], axis=1)))
    (d / "noface_flat.png").write_bytes(b"")  # replaced below
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(d / "noface_flat.png")

    (d / "bad_empty.jpg").write_bytes(b"")
    full = _jpeg(face)
    (d / "bad_truncated.jpg").write_bytes(full[: len(full) // 2])
    # A frame header in the middle of the compressed stream: libjpeg gives up there, yet the
    # file ends with its end-of-image marker like a whole one.
    mid = len(full) // 2
    (d / "broken_midstream.jpg").write_bytes(full[:mid] + b"\xff\xc0\x00\x11" + full[mid + 4 :])
    # Bytes after the end-of-image marker (camera trailers): a whole photo, accepted.
    (d / "ok_trailer.jpg").write_bytes(full + b"camera maker notes\x00" * 8)
    (d / "bad_not_image.jpg").write_bytes(b"this is a text file, not a JPEG\n" * 20)
    (d / "bad_notes.txt").write_text("not a photo")
    Image.fromarray(face).resize((24, 24)).save(d / "bad_tiny.png")
    Image.new("1", (12000, 12000)).save(d / "bad_huge.png")  # 144 Mpx, a few KB on disk
    os.symlink(d / "does_not_exist.jpg", d / "bad_dangling_link.jpg")

    # Names that collide as photo ids (see AWKWARD_IDS).
    small = np.asarray(Image.fromarray(face).resize((256, 256)))
    Image.fromarray(small).save(d / "ok_same.webp")
    Image.fromarray(small).save(d / "ok_same.bmp")
    (d / "ok_IMG_1.jpg").write_bytes(_jpeg(small))
    Image.fromarray(small).save(d / "ok_IMG_1.png")
    (d / "ok_Case.jpg").write_bytes(_jpeg(small))
    (d / "ok_case.JPG").write_bytes(_jpeg(small))
    (d / "nested" / "deeper").mkdir(parents=True)
    (d / "nested" / "ok_plain.jpg").write_bytes(_jpeg(small))
    (d / "nested" / "deeper" / "ok_plain.jpg").write_bytes(_jpeg(small))
    (d / "nested" / "bad_notes.txt").write_text("not a photo either")
    (d / "nested__ok_plain.jpg").write_bytes(_jpeg(small))  # joins like nested/ok_plain.jpg
    return d


def _md5_8(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()[:8]


# The ids ingest gives the colliding files of awkward_dir (by path under it), worked out by hand
# from pipeline.data.ingest.photo_ids' rule; every other file's id is its stem.
AWKWARD_IDS = {
    "ok_same.webp": "ok_same.webp",  # one stem, two formats: the extension joins the id
    "ok_same.bmp": "ok_same.bmp",
    "ok_IMG_1.jpg": "ok_IMG_1.jpg",
    "ok_IMG_1.png": "ok_IMG_1.png",
    # Alike ignoring case even with their extensions: a hash of the exact path tells them apart.
    "ok_Case.jpg": "ok_Case.jpg~" + _md5_8("ok_Case.jpg"),
    "ok_case.JPG": "ok_case.JPG~" + _md5_8("ok_case.JPG"),
    "nested/deeper/ok_plain.jpg": "nested__deeper__ok_plain",  # folders join the id
    "nested/bad_notes.txt": "nested__bad_notes",
    "nested/ok_plain.jpg": "nested__ok_plain.jpg~" + _md5_8("nested/ok_plain.jpg"),
    "nested__ok_plain.jpg": "nested__ok_plain.jpg~" + _md5_8("nested__ok_plain.jpg"),
}
