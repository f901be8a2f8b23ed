"""The `shifts` stage: London val/test faces as other cameras and lights show them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.io import load_npy, save_csv, save_npy
from pipeline.data.shifts import SHIFTS, ShiftsConfig, draw_shift, run_shifts

R = 128
FACES = [("neutral", "001_03", "val"), ("smiling", "004_08", "test")]


@pytest.fixture(scope="module")
def aligned(tmp_path_factory, london):
    """A data/aligned (manifest with photo paths, transforms, aligned landmarks) and split.csv."""
    from pipeline.data.align import alignment_transform, transform_points
    from pipeline.editing.edit import FaceDetector, read_image

    root = tmp_path_factory.mktemp("shiftdata")
    det = FaceDetector(upsample=0, detect_side=512)
    rows, transforms, lms = [], [], []
    for k, (label, name, split) in enumerate(FACES):
        path = london / label / f"{name}.jpg"
        lm = det.landmarks(read_image(path), str(path))
        m = alignment_transform(lm, R)
        transforms.append(m), lms.append(transform_points(lm, m))
        rows.append({"row": k, "id": f"{label}__{name}", "identity": name[:3], "label": label, "path": str(path),
                     "split": split})
    df = pd.DataFrame(rows)
    save_csv(root / "aligned" / "manifest.csv", df.drop(columns="split"))
    save_npy(root / "aligned" / "transforms.npy", np.stack(transforms))
    save_npy(root / "aligned" / "landmarks.npy", np.stack(lms).astype(np.float32))
    save_csv(root / "split" / "split.csv", df[["id", "identity", "split"]])
    return root


def _run(root, out, **kw):
    return run_shifts(ShiftsConfig(**kw), root / "aligned", root / "split" / "split.csv", R, out)


def test_every_face_under_every_shift_is_kept_or_listed(aligned, tmp_path):
    df = _run(aligned, tmp_path / "a")
    rejected = pd.read_csv(tmp_path / "a" / "rejected.csv")
    assert len(df) + len(rejected) == len(FACES) * len(SHIFTS)
    assert len(df) >= len(FACES) * (len(SHIFTS) - 2)  # dlib keeps finding London faces
    images, clean = load_npy(tmp_path / "a" / "images.npy"), load_npy(tmp_path / "a" / "clean.npy")
    lms = load_npy(tmp_path / "a" / "landmarks.npy")
    assert images.shape == clean.shape == (len(df), R, R, 3) and lms.shape == (len(df), 68, 2)
    assert set(df["split"]) == {"val", "test"}
    src = load_npy(aligned / "aligned" / "landmarks.npy")
    for i, rec in df.iterrows():
        lab_shift = images[i].astype(float).mean((0, 1)) - clean[i].astype(float).mean((0, 1))
        if rec["shift"] == "warm":  # redder, less blue than the same face unshifted
            assert lab_shift[0] > 8 and lab_shift[2] < -5
        if rec["shift"] == "dark":
            assert lab_shift.mean() < -15
        if rec["shift"] == "framing":  # a geometric shift only: the registered clean face is the photo
            assert np.array_equal(images[i], clean[i])
        if rec["shift"] not in ("framing", "mixed"):  # found and aligned again where the face was
            err = np.linalg.norm(lms[i] - src[int(rec["source_row"])], axis=1).mean()
            assert err < 0.05 * R


def test_shifts_are_seeded_and_deterministic(aligned, tmp_path):
    kw = dict(shifts=("cool", "noise", "framing"))
    _run(aligned, tmp_path / "a", **kw)
    _run(aligned, tmp_path / "b", **kw)
    _run(aligned, tmp_path / "c", seed=1, **kw)
    a, b, c = (load_npy(tmp_path / x / "images.npy") for x in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_strength_zero_gives_the_clean_faces(aligned, tmp_path):
    _run(aligned, tmp_path / "z", shifts=("warm", "side_light", "noise"), strength=0.0)
    images, clean = load_npy(tmp_path / "z" / "images.npy"), load_npy(tmp_path / "z" / "clean.npy")
    assert np.abs(images.astype(int) - clean.astype(int)).max() <= 1


def test_unknown_shift_is_refused():
    with pytest.raises(ValueError, match="unknown shifts"):
        ShiftsConfig(shifts=("warm", "sepia")).validate()
    with pytest.raises(ValueError, match="unknown shift"):
        draw_shift("sepia", np.random.default_rng(0), 384, np.zeros((68, 2)))
