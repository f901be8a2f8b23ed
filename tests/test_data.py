"""Data stages on small inputs: awkward files, London faces, alignment geometry, split, components."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import PARTS
from pipeline.data.align import AlignConfig, alignment_quad, alignment_transform, paste_back, run_align, transform_points
from pipeline.data.components import contact_sheet, crop_parts, run_components
from pipeline.data.ingest import IngestConfig, run_ingest
from pipeline.core.io import ImageDecodeError, atomic_path, check_image, load_image
from pipeline.data.landmarks import LandmarkConfig, run_landmarks
from pipeline.core.profiles import part_boxes
from pipeline.data.split import split_by_identity
from tests.conftest import AWKWARD_IDS, london_dir


@pytest.fixture(scope="module")
def awkward_run(awkward_dir: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("awkward_out")
    ing = run_ingest(IngestConfig(source=str(awkward_dir), identity_pattern=""), out / "ingest")
    lm = run_landmarks(LandmarkConfig(backend="dlib"), ing, out / "landmarks")
    al = run_align(AlignConfig(64), ing, lm, np.load(out / "landmarks" / "landmarks.npy"), out / "aligned")
    return ing, lm, al, out


def _files(root: Path) -> list[Path]:
    """Every file under root, dangling links included, as paths relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_ingest_lists_every_file_with_a_reason(awkward_dir, awkward_run):
    ing = awkward_run[0]
    files = _files(awkward_dir)
    expected = {rel.as_posix(): AWKWARD_IDS.get(rel.as_posix(), rel.stem) for rel in files}
    assert len(files) == 28 and set(AWKWARD_IDS) <= set(expected)
    # One row per file, none dropped (dangling link included), under the id worked out by hand.
    assert len(ing) == len(files) and ing["id"].is_unique
    assert sorted(ing["id"]) == sorted(expected.values())
    assert ing["id"].str.casefold().is_unique
    rows = ing.set_index("id")
    for rel, pid in expected.items():
        if not (awkward_dir / rel).is_symlink():
            assert rows.loc[pid, "path"] == str((awkward_dir / rel).resolve()), rel
        name = Path(rel).name
        expect = "rejected" if name.startswith("bad_") else "ok"
        assert rows.loc[pid, "status"] == expect, (rel, rows.loc[pid, "reason"])
        assert (rows.loc[pid, "reason"] != "") == (expect == "rejected"), rel
    reasons = dict(zip(ing["id"], ing["reason"]))
    assert reasons["bad_empty"] == "empty file"
    assert reasons["bad_truncated"].startswith("corrupt or truncated")
    assert reasons["bad_not_image"] == "not an image"
    assert reasons["bad_notes"].startswith("not an image file type")
    assert reasons["bad_tiny"].startswith("too small")
    assert reasons["bad_huge"].startswith("too large")
    assert reasons["bad_dangling_link"].startswith("unreadable")
    assert reasons["nested__bad_notes"].startswith("not an image file type")


def test_ingest_ids_are_stable(awkward_dir, awkward_run, tmp_path):
    """The same files give the same ids, whatever order they are listed in; `limit` keeps them."""
    from pipeline.data.ingest import list_photos, photo_ids

    files = list_photos(awkward_dir)
    assert photo_ids(files[::-1], awkward_dir) == photo_ids(files, awkward_dir)
    again = run_ingest(IngestConfig(source=str(awkward_dir), identity_pattern=""), tmp_path / "ingest")
    assert dict(zip(again["id"], again["path"])) == dict(zip(awkward_run[0]["id"], awkward_run[0]["path"]))
    # London: ids as before (no collisions there), whether or not a limit drops identities.
    london_ids = photo_ids(list_photos(london_dir()), london_dir())
    assert london_ids[london_dir() / "neutral" / "001_03.jpg"] == "neutral__001_03"
    assert all(i == f"{p.parent.name}__{p.stem}" for p, i in london_ids.items())


def test_ingest_check_agrees_with_a_full_decode(awkward_dir, tmp_path):
    """io.check_image (ingest: headers and a complete stream) gives load_image's size, or
    load_image's reason, for every awkward file, without decoding a whole JPEG."""
    from PIL import JpegImagePlugin

    for path in (awkward_dir / rel for rel in _files(awkward_dir)):
        try:
            img, _ = load_image(path, 80_000_000, 128)
        except ImageDecodeError as e:
            if path.stem.startswith("broken_"):  # damage mid-stream: found by the first decode
                assert check_image(path, 80_000_000, 128) == (512, 512)
                continue
            with pytest.raises(ImageDecodeError) as caught:
                check_image(path, 80_000_000, 128)
            assert str(caught.value) == str(e), path.name
            continue
        assert check_image(path, 80_000_000, 128) == (img.shape[1], img.shape[0]), path.name
    # A portrait stored on its side (EXIF orientation 6): reported upright, as decoded.
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    side = tmp_path / "side.jpg"
    Image.new("RGB", (300, 200), (90, 120, 150)).save(side, "JPEG", exif=exif.tobytes())
    assert load_image(side)[0].shape[:2] == (300, 200)
    jpeg_load = JpegImagePlugin.JpegImageFile.load
    try:
        JpegImagePlugin.JpegImageFile.load = None  # any decode would now fail
        assert check_image(side) == (200, 300)
        with pytest.raises(TypeError):
            check_image(awkward_dir / "ok_trailer.jpg")  # no end marker at the end: decoded
    finally:
        JpegImagePlugin.JpegImageFile.load = jpeg_load


def test_a_stream_broken_midway_is_listed_by_landmarks(awkward_run):
    """Ingest accepts it (its end is intact); the first decode fails and lists it, not a crash."""
    ing, lm = awkward_run[0].set_index("id"), awkward_run[1].set_index("id")
    assert ing.loc["broken_midstream", "status"] == "ok"
    assert lm.loc["broken_midstream", "status"] == "rejected"
    assert lm.loc["broken_midstream", "reason"].startswith("corrupt or truncated")
    assert "broken_midstream" not in set(awkward_run[2].query("status == 'ok'").id)


def test_landmarks_face_counts(awkward_run):
    lm = awkward_run[1].set_index("id")
    assert lm.loc["noface_flat", "status"] == "rejected" and lm.loc["noface_flat", "reason"] == "no face found"
    assert lm.loc["two_faces", "n_faces"] == 2 and lm.loc["two_faces", "status"] == "ok"
    for name in ["ok_plain", "ok_gray", "ok_16bit", "ok_cmyk", "ok_palette", "ok_rgba", "ok_exif_rotated",
                 "ok_trailer"]:
        assert lm.loc[name, "status"] == "ok", (name, lm.loc[name, "reason"])
        assert lm.loc[name, "n_faces"] == 1


def test_align_outputs_consistent(awkward_run):
    _, lm, al, out = awkward_run
    images = np.load(out / "aligned" / "images.npy")
    man = pd.read_csv(out / "aligned" / "manifest.csv")
    assert len(man) == images.shape[0] == int((lm.status == "ok").sum())
    assert images.shape[1:] == (64, 64, 3) and images.dtype == np.uint8
    alm = np.load(out / "aligned" / "landmarks.npy")
    # Aligned eyes sit level, at the same place for every photo whatever its encoding.
    eyes = np.stack([alm[:, 36:42].mean(1), alm[:, 42:48].mean(1)], 1)
    assert np.abs(eyes[:, 0, 1] - eyes[:, 1, 1]).max() < 1.5
    assert np.abs(eyes - eyes.mean(0)).max() < 3.0


def test_exif_rotation_is_applied(awkward_dir):
    img, _ = load_image(awkward_dir / "ok_exif_rotated.jpg")
    plain, _ = load_image(awkward_dir / "ok_plain.jpg")
    assert img.shape == plain.shape
    assert np.abs(img.astype(int) - plain.astype(int)).mean() < 6  # upright again


def test_load_image_modes(awkward_dir):
    for name in ["ok_gray.png", "ok_16bit.png", "ok_cmyk.jpg", "ok_palette.png", "ok_rgba.png"]:
        img, scale = load_image(awkward_dir / name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and scale == 1.0
    rgba, _ = load_image(awkward_dir / "ok_rgba.png")
    assert (rgba[:20, :20] == 255).all()  # transparent corner composited on white
    sixteen, _ = load_image(awkward_dir / "ok_16bit.png")
    assert 20 < sixteen.mean() < 235  # scaled, not clipped to white
    with pytest.raises(ImageDecodeError):
        load_image(awkward_dir / "bad_truncated.jpg")


def test_draft_decode_scale(london):
    full, s1 = load_image(london / "neutral" / "001_03.jpg")
    small, s2 = load_image(london / "neutral" / "001_03.jpg", draft_side=256)
    assert s1 == 1.0 and s2 == pytest.approx(small.shape[0] / full.shape[0]) and small.shape[0] >= 256


def test_alignment_undoes_rotation_and_scale():
    rng = np.random.default_rng(0)
    lm = rng.normal(130, 30, (68, 2))
    lm[36:42] = [100, 100] + rng.normal(0, 1, (6, 2))
    lm[42:48] = np.c_[260 - lm[36:42, 0], lm[36:42, 1]]  # mirror of the left eye about x = 130
    lm[48], lm[54] = [110, 170], [150, 170]
    q = alignment_quad(lm)
    sides = np.linalg.norm(np.roll(q, -1, 0) - q, axis=1)
    assert np.allclose(sides, sides[0], rtol=1e-6)  # a square crop
    # The same face turned by 25 degrees and scaled 1.7x aligns to the same pixels.
    t = np.deg2rad(25)
    rot = 1.7 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    lm2 = lm @ rot.T + [40, -12]
    a = transform_points(lm, alignment_transform(lm, 256))
    b = transform_points(lm2, alignment_transform(lm2, 256))
    assert np.abs(a - b).max() < 1e-2
    eyes = np.stack([a[36:42].mean(0), a[42:48].mean(0)])
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-2  # symmetric face: eyes level


def test_paste_back_only_inside_mask(london):
    photo, _ = load_image(london / "neutral" / "001_03.jpg", draft_side=256)
    from pipeline.data.landmarks import DlibBackend

    lm = DlibBackend().detect(photo).landmarks
    m = alignment_transform(lm, 64)
    edited = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[24:40, 24:40] = 1
    out = paste_back(photo, edited, m, mask, feather=0.05)
    assert out.shape == photo.shape
    changed = np.abs(out.astype(int) - photo.astype(int)).sum(2) > 0
    inside = np.zeros(photo.shape[:2], bool)
    quad = np.array([[24, 24], [40, 24], [40, 40], [24, 40]], np.float64) - 0.5
    import cv2

    inv = cv2.invertAffineTransform(m)
    corners = transform_points(quad, inv)
    cv2.fillConvexPoly(inside.view(np.uint8), corners.astype(np.int32), 1)
    assert changed.any()
    # Outside a small margin around the mask's footprint nothing moved.
    margin = cv2.dilate(inside.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    assert not changed[~margin].any()


def test_split_by_identity_seeded():
    man = pd.DataFrame({"id": [f"{i:03d}_{k}" for i in range(20) for k in ("03", "08")],
                        "identity": [f"{i:03d}" for i in range(20) for _ in range(2)]})
    a, b = split_by_identity(man, 0.25, seed=1), split_by_identity(man, 0.25, seed=1)
    assert a.equals(b)
    assert (a.groupby("identity")["split"].nunique() == 1).all()  # never straddles
    assert a.groupby("split")["identity"].nunique()["test"] == 5
    c = split_by_identity(man, 0.25, seed=2)
    assert not a["split"].equals(c["split"])


def test_split_train_identities_keeps_val_and_test():
    """A data-size study trains on fewer people; val and test must stay the same people."""
    man = pd.DataFrame({"id": [f"{i:03d}_{k}" for i in range(40) for k in ("03", "08")],
                        "identity": [f"{i:03d}" for i in range(40) for _ in range(2)]})
    full = split_by_identity(man, 0.2, seed=0, val_fraction=0.1)
    few = split_by_identity(man, 0.2, seed=0, val_fraction=0.1, train_identities=7)
    held = full["split"].isin(["val", "test"])
    assert few["split"][held].equals(full["split"][held])
    assert few[few["split"] == "train"]["identity"].nunique() == 7
    assert set(few["identity"][few["split"] == "train"]) < set(full["identity"][full["split"] == "train"])
    assert set(few["split"]) == {"train", "val", "test", "unused"}
    assert split_by_identity(man, 0.2, seed=0, val_fraction=0.1, train_identities=0).equals(full)
    with pytest.raises(ValueError, match="train_identities"):
        split_by_identity(man, 0.2, seed=0, train_identities=-1)


def test_components_pack_crops(tmp_path):
    r = 128
    n = 6
    images = np.random.default_rng(0).integers(0, 255, (n, r, r, 3), np.uint8)
    sketches = np.random.default_rng(1).integers(0, 255, (n, r, r), np.uint8)
    man = pd.DataFrame({"row": range(n), "id": [f"p{i}" for i in range(n)], "identity": [str(i // 2) for i in range(n)]})
    split = pd.DataFrame({"id": man.id, "split": ["train"] * 4 + ["test"] * 2})
    counts = run_components(man, images, sketches, split, r, tmp_path, chunk=3)  # train: chunks of 3 + 1
    assert counts == {"train": 4, "val": 0, "test": 2}
    boxes = part_boxes(r)
    for part in PARTS:
        x, y, s = boxes[part]
        ph = np.load(tmp_path / "test" / f"{part}_photo.npy")
        sk = np.load(tmp_path / "test" / f"{part}_sketch.npy")
        assert ph.shape == (2, s, s, 3) and sk.shape == (2, s, s) and s % 16 == 0
        assert np.array_equal(ph[1], images[5, y:y + s, x:x + s])
        assert np.array_equal(sk[0], sketches[4, y:y + s, x:x + s])
        train = np.load(tmp_path / "train" / f"{part}_photo.npy")
        assert np.array_equal(train, images[:4, y:y + s, x:x + s])  # across the chunk boundary
    sheet = contact_sheet(images, sketches, r, tmp_path / "sheet.png", n=5)
    assert (tmp_path / "sheet.png").stat().st_size > 0 and sheet.shape == (2 * r, 4 * 2 * r, 3)
    assert crop_parts(images, r)["bg"].shape == images.shape


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_npy_writer_writes_what_np_save_writes_or_nothing(tmp_path):
    from pipeline.core.io import npy_writer, save_rows

    x = np.arange(60, dtype=np.uint8).reshape(5, 3, 4)
    with npy_writer(tmp_path / "a.npy", x.shape, x.dtype) as arr:
        arr[:] = x
    np.save(tmp_path / "b.npy", x)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    with pytest.raises(RuntimeError):
        with npy_writer(tmp_path / "c.npy", x.shape, x.dtype) as arr:
            arr[:2] = x[:2]
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy"]
    save_rows(tmp_path / "a.npy", np.load(tmp_path / "a.npy", mmap_mode="r"), np.array([0, 2, 4]), chunk=2)
    assert np.array_equal(np.load(tmp_path / "a.npy"), x[[0, 2, 4]])  # rewritten from its own memory map


def test_release_drops_a_maps_pages_and_keeps_its_bytes(tmp_path):
    """A pass over a memory map holds one chunk in memory, not the whole file (the data
    stages at thousands of faces); every byte written still reaches the file."""
    import os

    from pipeline.core.io import load_npy, npy_writer, release

    def resident() -> int:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    n, mb = 64, 1 << 20
    with npy_writer(tmp_path / "big.npy", (n, mb), np.uint8) as arr:
        for i in range(n):
            arr[i] = i
        before = resident()
        release(arr)
        assert before - resident() > 48 * mb  # the 64 MB written were resident, now they are not
    back = load_npy(tmp_path / "big.npy")
    assert all(back[i, :: 4096].min() == back[i, :: 4096].max() == i for i in range(n))
    release(back, np.zeros(3))  # a read map, and an array that is no map: no error


def test_align_drops_a_photo_that_broke_after_ingest(london, tmp_path):
    """A photo truncated between landmarks and align is listed with its reason; the other
    faces keep consecutive rows in images.npy, landmarks.npy and the manifest."""
    import shutil

    src = tmp_path / "photos"
    src.mkdir()
    for p in sorted(london.rglob("*.jpg"))[:3]:
        shutil.copy(p, src / p.name)
    ing = run_ingest(IngestConfig(source=str(src), identity_pattern=""), tmp_path / "ingest")
    lm = run_landmarks(LandmarkConfig(backend="dlib"), ing, tmp_path / "landmarks")
    assert (lm.status == "ok").all()
    broken = ing.sort_values("id").path.iloc[1]
    data = Path(broken).read_bytes()
    Path(broken).write_bytes(data[: len(data) // 3])
    out = run_align(AlignConfig(64), ing, lm, np.load(tmp_path / "landmarks" / "landmarks.npy"), tmp_path / "aligned")
    bad = out[out.path == broken]
    assert bad.status.tolist() == ["rejected"] and "truncated" in bad.reason.iloc[0]
    images = np.load(tmp_path / "aligned" / "images.npy")
    manifest = pd.read_csv(tmp_path / "aligned" / "manifest.csv")
    assert images.shape == (2, 64, 64, 3) and len(np.load(tmp_path / "aligned" / "landmarks.npy")) == 2
    assert manifest.row.tolist() == [0, 1] and broken not in manifest.path.tolist()
    assert images.reshape(2, -1).std(1).min() > 10  # real faces, not an empty row


def test_part_boxes_scale_to_multiples_of_16():
    assert part_boxes(512) == {"eye1": (108, 156, 128), "eye2": (255, 156, 128), "nose": (182, 232, 160),
                               "mouth": (169, 301, 192), "bg": (0, 0, 512)}
    for r in (64, 128, 256):
        for x, y, s in part_boxes(r).values():
            assert s % 16 == 0 and 0 <= x <= r - s and 0 <= y <= r - s


def test_ingest_records_exact_size_of_large_and_rotated_photos(tmp_path):
    """Ingest decodes at 1/8 scale to validate; the recorded size is still the photo's own,
    with EXIF quarter turns applied, as load_image returns the pixels."""
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1350, 1001, 3), np.uint8)).save(tmp_path / "a_big.jpg", quality=80)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), np.uint8)).save(tmp_path / "b_turned.jpg", exif=exif.tobytes())
    ing = run_ingest(IngestConfig(source=str(tmp_path), identity_pattern="", min_side=16), tmp_path / "out").set_index("id")
    assert (ing.loc["a_big", ["width", "height"]].tolist()) == [1001, 1350]
    assert (ing.loc["b_turned", ["width", "height"]].tolist()) == [200, 300]
    assert load_image(tmp_path / "b_turned.jpg")[0].shape[:2] == (300, 200)


def test_threaded_stages_match_serial(london, tmp_path):
    """ingest, landmarks and align on 2 threads write exactly what 1 thread writes."""
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        ing = run_ingest(IngestConfig(source=str(london), limit=3), out / "ingest", workers)
        lm = run_landmarks(LandmarkConfig(backend="dlib"), ing, out / "landmarks", workers=workers)
        run_align(AlignConfig(64), ing, lm, np.load(out / "landmarks" / "landmarks.npy"), out / "aligned", workers)
        outs[workers] = out
    for name in ("ingest/manifest.csv", "landmarks/manifest.csv", "aligned/manifest.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(outs[1] / name), pd.read_csv(outs[2] / name))
    for name in ("landmarks/landmarks.npy", "aligned/images.npy", "aligned/transforms.npy"):
        np.testing.assert_array_equal(np.load(outs[1] / name), np.load(outs[2] / name))
    assert len(np.load(outs[2] / "aligned/images.npy")) == 6
    _check_sketch_stages(outs[1])


def _check_sketch_stages(out: Path) -> None:
    """The sketch stage on aligned London faces, then its continuity report at the aligned size
    and on the same faces re-aligned from their photos at twice that size."""
    from pipeline.data.sketch.draw import SketchStyle
    from pipeline.data.sketch_report import SketchReportConfig, run_sketch_report
    from pipeline.data.sketches import SketchesConfig, run_sketch

    sketch_cfg = SketchesConfig(device="cpu", batch_size=4, style=SketchStyle(randomize=0.0))
    summary = run_sketch(sketch_cfg, out / "aligned", out / "sketch", workers=1)
    sketches = np.load(out / "sketch" / "sketches.npy")
    assert summary == {"faces": 6, "resolution": 64} and sketches.shape == (6, 64, 64) and sketches.dtype == np.uint8
    report = run_sketch_report(SketchReportConfig(faces=4, resolution=128), sketch_cfg, out / "aligned",
                               out / "sketch", out / "sheet.png", workers=1)
    assert report["faces"] == 4
    for key in ("continuity", "continuity_128px"):
        assert report[key]["ours"]["fragments_per_face"] > 0 and report[key]["canny"]["fragments_per_face"] > 0
    # At 128 px our strokes are longer and fewer than Canny's on the same faces.
    assert report["continuity_128px"]["fragment_ratio"] > 1.2, report["continuity_128px"]
    sheet = load_image(out / "sheet.png")[0]
    assert sheet.shape[0] > 4 * 128 and sheet.shape[1] > 3 * 128  # 4 rows of face | Canny | ours
    empty = run_sketch_report(SketchReportConfig(faces=0), sketch_cfg, out / "aligned", out / "sketch",
                              out / "empty.png")
    assert empty == {"faces": 0} and load_image(out / "empty.png")[0].min() == 0  # a card saying why
    # Fewer sketches than faces means the sketch stage is stale: a clear error, not a wrong report.
    np.save(out / "sketch" / "sketches.npy", sketches[:5])
    with pytest.raises(ValueError, match="dvc repro sketches"):
        run_sketch_report(SketchReportConfig(faces=4), sketch_cfg, out / "aligned", out / "sketch")


class _StubFan:
    """face-alignment's interface, for FanBackend's batching glue (the real weights need a
    download): pixel (0,0) red of each photo says how many faces it holds; face j has box
    (10j, 10j, 10j+20, 10j+20) with score 0.5 + 0.1j and landmarks at its corner + 0..67."""

    def __init__(self):
        self.batches: list[tuple[int, ...]] = []
        self.face_detector = self

    def detect_from_batch(self, tensor):
        self.batches.append(tuple(tensor.shape))
        assert tensor.dtype.is_floating_point and tensor.shape[1] == 3
        return [np.array([[10 * j, 10 * j, 10 * j + 20, 10 * j + 20, 0.5 + 0.1 * j] for j in range(int(img[0, 0, 0]))])
                for img in tensor]

    def get_landmarks_from_image(self, image, detected_faces):
        (box,) = detected_faces
        return [box[:2] + np.arange(68.0)[:, None]]


def _stub_photos(tmp_path: Path) -> Path:
    from PIL import Image

    d = tmp_path / "photos"
    d.mkdir()
    for name, faces, shape in [("a", 1, (40, 60)), ("b", 0, (40, 60)), ("c", 3, (50, 50)), ("d", 2, (40, 60)), ("e", 1, (50, 50))]:
        img = np.full((*shape, 3), 90, np.uint8)
        img[0, 0, 0] = faces
        Image.fromarray(img).save(d / f"{name}.png")
    return d


def test_fan_backend_batches_by_size_and_keeps_the_best_face(tmp_path):
    from PIL import Image

    from pipeline.data.landmarks import FanBackend

    stub = _StubFan()
    fan = FanBackend(fa=stub)
    paths = sorted(_stub_photos(tmp_path).iterdir())
    dets = fan.detect_batch([np.asarray(Image.open(p)) for p in paths])
    assert sorted(stub.batches) == [(2, 3, 50, 50), (3, 3, 40, 60)]  # one detector call per size
    assert dets[1] is None  # b: no face
    counts = {p.stem: d.n_faces for p, d in zip(paths, dets) if d is not None}
    assert counts == {"a": 1, "c": 3, "d": 2, "e": 1}
    c = dets[2]
    assert c.score == pytest.approx(0.7) and c.landmarks.shape == (68, 2)
    np.testing.assert_allclose(c.landmarks[0], [20, 20])  # the best (last) box's corner


def test_run_landmarks_with_a_batch_backend_matches_photo_by_photo(tmp_path):
    from pipeline.data.landmarks import FanBackend

    ing = run_ingest(IngestConfig(source=str(_stub_photos(tmp_path)), identity_pattern="", min_side=16), tmp_path / "i")

    class OneByOne:  # the same detections without detect_batch: the per-photo path
        name = "fan"

        def __init__(self):
            self.fan = FanBackend(fa=_StubFan())

        def detect(self, image):
            return self.fan.detect(image)

    stub = _StubFan()
    batched = run_landmarks(LandmarkConfig(batch_size=2), ing, tmp_path / "batched", backend=FanBackend(fa=stub))
    single = run_landmarks(LandmarkConfig(), ing, tmp_path / "single", backend=OneByOne())
    assert len(stub.batches) >= 3  # 5 photos in chunks of 2
    pd.testing.assert_frame_equal(batched, single)
    assert batched.set_index("id").loc["b", "reason"] == "no face found"
    np.testing.assert_array_equal(np.load(tmp_path / "batched" / "landmarks.npy"), np.load(tmp_path / "single" / "landmarks.npy"))
    assert len(np.load(tmp_path / "batched" / "landmarks.npy")) == 4
