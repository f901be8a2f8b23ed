"""The dfi stage on real aligned London faces with one-step micro models (tests/helpers_models)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.dfi.dfi import DFIConfig, load_dfi_data, run_dfi
from pipeline.core.io import save_csv, save_npy
from tests.helpers_models import PROFILE, aligned_london, models  # noqa: F401  (fixture)

# (identity, label, split): two training people with both photos, a test person with both (a
# London pair), a test person with only the neutral photo (edited, not evaluated) and a val
# person with both (alpha is chosen on them).
FACES = [
    ("001", "neutral", "train"), ("001", "smiling", "train"),
    ("002", "neutral", "train"), ("002", "smiling", "train"),
    ("007", "neutral", "test"), ("007", "smiling", "test"),
    ("003", "neutral", "test"),
    ("009", "neutral", "val"), ("009", "smiling", "val"),
]  # fmt: skip
SUFFIX = {"neutral": "03", "smiling": "08"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, london):
    """data/aligned + data/split in the real layout (all four people are female in London's info.csv)."""
    root = tmp_path_factory.mktemp("dfidata")
    ids = [f"{ident}_{SUFFIX[label]}" for ident, label, _ in FACES]
    paths = [london / label / f"{i}.jpg" for i, (_, label, _) in zip(ids, FACES)]
    faces, lms, transforms = aligned_london(paths, 128, transforms=True)
    save_npy(root / "aligned" / "images.npy", faces)
    save_npy(root / "aligned" / "landmarks.npy", lms)
    save_npy(root / "photo_transforms.npy", transforms)  # aligned/transforms.npy only where a test wants photos
    (root / "photo_paths.txt").write_text("\n".join(str(p) for p in paths))
    n = len(FACES)
    save_csv(root / "aligned" / "manifest.csv", pd.DataFrame({
        "row": range(n), "id": [f"{lab}__{i}" for i, (_, lab, _) in zip(ids, FACES)],
        "identity": [f[0] for f in FACES], "label": [f[1] for f in FACES], "path": ids,
        "age": [24.0, 24.0, 24.0, 24.0, 21.0, 21.0, 38.0, 30.0, 30.0], "gender": ["female"] * n, "ethnicity": ["white"] * n,
    }))
    save_csv(root / "split" / "split.csv", pd.DataFrame({
        "id": [f"{lab}__{i}" for i, (_, lab, _) in zip(ids, FACES)], "identity": [f[0] for f in FACES],
        "split": [f[2] for f in FACES],
    }))
    return root, faces


def _params(**kw):
    base = dict(profile=PROFILE, alphas=[0.0, 1.0], parts=["mouth", "bg"], spaces=["geometry", "appearance"],
                grid_faces=2, batch_size=4, classic_faces=1, classic_k=1, classic_alphas=[0.0, 0.4],
                classic_iters=2, shifts=["warm", "framing"])
    return {**base, **kw}


def test_config_rejects_unknown_keys_and_bad_parts():
    cfg = DFIConfig.from_params({"alphas": [0.5, 1], "parts": ["mouth"]})
    assert cfg.alphas == (0.5, 1) and cfg.parts == ("mouth",)
    with pytest.raises(ValueError, match="unknown keys"):
        DFIConfig.from_params({"alpha": 1.0})
    with pytest.raises(ValueError, match="parts"):
        DFIConfig.from_params({"parts": ["ear"]})


def test_data_pairs_follow_identity_and_split(data_dir):
    root, _ = data_dir
    data = load_dfi_data(root, DFIConfig(), 128)
    assert data.train_with.tolist() == [1, 3] and data.train_without.tolist() == [0, 2]
    assert data.test.tolist() == [4, 6]
    assert data.pair.tolist() == [5, -1]  # 003 has no smiling photo in the test split
    assert data.val.tolist() == [7] and data.val_pair.tolist() == [8]


def test_alpha_rule_prefers_mouth_error_among_alphas_that_keep_identity():
    from pipeline.dfi.dfi import pick_alpha

    figs = {0.0: {"mouth_nme": 0.06, "same_person": 1.0}, 1.0: {"mouth_nme": 0.05, "same_person": 0.9},
            2.0: {"mouth_nme": 0.04, "same_person": 0.5}, 3.0: {"mouth_nme": None, "same_person": None}}
    assert pick_alpha(figs, 0.8) == (1.0, "")
    assert pick_alpha(figs, 0.4) == (2.0, "")
    alpha, why = pick_alpha(figs, 1.01)  # none qualifies: the one that keeps identity best
    assert alpha == 0.0 and "keeps identity best" in why
    assert pick_alpha({1.0: {"mouth_nme": None}}, 0.8)[0] is None


def test_change_blend_adds_only_the_change_inside_the_face(data_dir):
    from pipeline.dfi.dfi import change_blend

    root, faces = data_dir
    lms = np.load(root / "aligned" / "landmarks.npy")[:2]
    photos, recon = faces[:2], faces[2:4]  # any two images as the "reconstructions"
    # a change no move explains (editing.compose adds it in full above residual_high levels)
    edits = np.stack([recon, np.clip(recon.astype(int) + 100, 0, 255).astype(np.uint8)], axis=1)
    out = change_blend(photos, recon, edits, lms)
    assert out.shape == (2, 2, 128, 128, 3)
    assert np.array_equal(out[:, 0], photos)  # no change: the photo itself
    moved = out[:, 1].astype(int) - photos
    assert moved[:, 64, 64].min() >= 35 and (moved[:, :4, :4] == 0).all()  # inside the face only


def test_run_dfi_fast_and_classic_absent(models, data_dir, tmp_path, monkeypatch):
    root, faces = data_dir
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    torch.manual_seed(0)
    metrics = run_dfi(_params(), root, models, tmp_path / "out", tmp_path / "reports", "cpu")

    assert json.loads((tmp_path / "reports" / "dfi.json").read_text()) == json.loads(json.dumps(metrics))
    assert (metrics["n_train_with"], metrics["n_train_without"], metrics["n_test"], metrics["n_pairs"]) == (2, 2, 2, 1)
    # alpha is chosen on the val person (009), never on the test faces; the figures are the test faces'.
    choice = metrics["alpha"]
    assert choice["on"] == "val" and (choice["n_val"], choice["n_val_pairs"]) == (1, 1)
    if choice["chosen"] is None:  # the one-step micro models' faces are noise: dlib may find none on val
        assert "dlib found no val edit" in choice["why"] and "chosen" not in metrics["fast_change"]
    else:  # judged as dfe attribute puts edits back by default (dfi.blend: change)
        assert choice["chosen"] in (0.0, 1.0) and metrics["fast_change"]["chosen"]["alpha"] == choice["chosen"]
    assert choice["blend"] == "change" and set(metrics["fast_change"]) >= {"n_common", "alpha_0", "alpha_1"}
    val = json.loads((tmp_path / "out" / "val.json").read_text())
    assert val["alpha"] == choice and set(val["fast"]) >= {"recon", "alpha_0", "alpha_1"}
    test_ids = set(pd.read_csv(tmp_path / "out" / "test.csv", dtype={"id": str})["id"])
    assert test_ids == {"neutral__007_03", "neutral__003_03"}

    # The vector file is the one attribute-vector format: learned vectors, the training faces as
    # examples (for classic DFI's neighbours), the val-chosen alpha and how it was made.
    from pipeline.dfi.vectors import load_vector

    vec = load_vector(tmp_path / "out" / "vectors.safetensors")
    assert vec.profile == PROFILE and vec.resolution == 128 and vec.parts == ("mouth", "bg")
    if choice["chosen"] is None:
        assert vec.alpha == 1.0 and vec.alpha_source.startswith("default 1 (dlib found no val edit")
    else:
        assert vec.alpha == choice["chosen"] and vec.alpha_source.startswith("chosen on val")
    assert (len(vec.examples["with"]), len(vec.examples["without"])) == (2, 2)
    assert vec.examples["with"].files == ["smiling__001_08", "smiling__002_08"]
    assert vec.classic is None and vec.classic_status.startswith("absent") and vec.made_by == "dfi stage"
    assert 48 not in vec.shape_points and len(vec.shape_points) == 48
    assert metrics["classic"].startswith("absent: VGG-19 ImageNet weights not found")
    # no data/aligned/transforms.npy here: nothing is measured at the photo's size, and it says why
    assert metrics["photo_size"].startswith("absent: none of the 2 photos") and "transforms.npy" in metrics["photo_size"]
    assert metrics["alpha"]["measured_at"] == "128 px aligned faces"
    fast = metrics["fast"]
    assert fast["seconds_per_image"] > 0
    for key in ("recon", "alpha_0", "alpha_1"):
        assert set(fast[key]) == {"mouth_nme", "missed", "id_distance", "id_similarity", "same_person"}
        assert 0 <= fast[key]["missed"] <= 1  # only the one paired face is landmarked
    # The real photos: dlib finds the neutral face and its mouth is near (not at) the smile's.
    base = metrics["baseline"]
    assert base["source_missed"] == 0 and 0 < base["source_mouth_nme"] < 0.3
    assert base["target_same_person"] == 1.0 and base["target_id_distance"] < 0.6

    recon = np.load(tmp_path / "out" / "recon.npy")
    edits = np.load(tmp_path / "out" / "fast_edits.npy")
    sketches = np.load(tmp_path / "out" / "fast_sketches.npy")
    assert recon.shape == (2, 128, 128, 3) and edits.shape == (2, 2, 128, 128, 3) and sketches.shape == (2, 2, 128, 128)
    # alpha = 0 is the reconstruction; alpha = 1 moves it (and its decoded sketch).
    assert np.abs(edits[:, 0].astype(int) - recon).max() <= 1
    assert np.abs(edits[:, 1].astype(int) - recon).mean() > 0.5
    assert not np.array_equal(sketches[:, 0], sketches[:, 1])
    assert fast["alpha_0"]["id_distance"] == pytest.approx(fast["recon"]["id_distance"], abs=0.05)

    from pipeline.core.io import load_image

    grid, _ = load_image(tmp_path / "reports" / "dfi" / "fast.png")
    assert grid.shape[1] > 6 * 128 and grid.shape[0] > 2 * 128  # 6 columns, 2 rows
    assert (tmp_path / "reports" / "dfi" / "classic.png").exists()
    assert not (tmp_path / "out" / "classic_edits.npy").exists()


def test_run_dfi_classic_with_vgg_weights(models, data_dir, tmp_path, monkeypatch):
    """Random torchvision-format VGG-19 weights in a temporary TORCH_HOME make classic DFI run."""
    from pipeline.models.vgg import VGG19Features, vgg_weights_path

    root, faces = data_dir
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(0)
    path = vgg_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(VGG19Features().state_dict(), path)

    metrics = run_dfi(_params(alphas=[0.5]), root, models, tmp_path / "out", tmp_path / "reports", "cpu")
    from pipeline.dfi.vectors import load_vector

    vec = load_vector(tmp_path / "out" / "vectors.safetensors")  # with VGG-19: the classic vector too
    assert vec.classic is not None and abs(float(vec.classic.norm()) - 1) < 1e-4 and vec.alpha in (0.5, 1.0)
    classic = metrics["classic"]
    assert isinstance(classic, dict) and classic["n_faces"] == 1 and classic["iters"] == 2
    assert set(classic) >= {"alpha_0", "alpha_0p4", "seconds_per_image"}
    edits = np.load(tmp_path / "out" / "classic_edits.npy")
    assert edits.shape == (1, 2, 128, 128, 3)
    # From z = x, alpha 0 has nothing to move towards; alpha 0.4 does.
    photo = faces[4].astype(float)
    assert np.abs(edits[0, 0] - photo).mean() < np.abs(edits[0, 1] - photo).mean()


def test_run_dfi_measures_the_smile_at_the_photos_size(models, data_dir, tmp_path, monkeypatch):
    """With the photos and their alignment, the test edits are composed into each photo cut out at
    dfi.measure_size and measured there beside their nulls; an unreadable photo is listed, not fatal."""
    from pipeline.evaluation.metrics import DFI_GATES

    src, _ = data_dir
    junk = tmp_path / "003_03.jpg"
    junk.write_bytes(b"not a photo\n" * 20)
    root = _with_photos(src, tmp_path / "data", junk)
    man = pd.read_csv(root / "aligned" / "manifest.csv", dtype={"identity": str, "id": str})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    torch.manual_seed(0)
    metrics = run_dfi(_params(measure_size=256, classic_faces=0), root, models, tmp_path / "out", tmp_path / "reports", "cpu")

    ps = metrics["photo_size"]
    assert isinstance(ps, dict), ps
    assert (ps["side"], ps["motion"], ps["n_faces"], ps["n_pairs"]) == (256, "landmarks", 1, 1)
    assert list(ps["skipped"]) == [str(junk)]
    assert metrics["alpha"]["measured_at"] in ("256 px photo crops", "128 px aligned faces")
    # alpha 0 composes nothing: the photo itself, so its figures are the photo's (the null)
    assert ps["alpha_0"]["id_distance"] == pytest.approx(0.0, abs=1e-6) and ps["photo"]["same_person"] == 1.0
    # dlib finds the real photo's mouth at 256 px: the composed edits are measured against it
    assert ps["n_common"] == 1 and ps["photo"]["mouth_nme"] > 0
    assert ps["alpha_0"]["mouth_over_photo"] == pytest.approx(1.0) and ps["alpha_1"]["mouth_over_photo"] is not None
    # the population smile's ceiling: the photo's own points moved, no image; alpha 0 moves none
    assert ps["points_moved_over_photo"]["alpha_0"] == pytest.approx(1.0) and ps["points_moved_over_photo"]["alpha_1"] > 0
    chosen = metrics["alpha"]["chosen"]
    if chosen is not None:  # the chosen edit beside both nulls: the photo and the whole render pasted
        assert ps["chosen"]["alpha"] == chosen and {"full", "renders_motion"} <= set(ps)
        assert ps["full"]["id_distance"] is None or ps["full"]["id_distance"] > ps["chosen"]["id_distance"]
    assert set(metrics["gates"]) == set(DFI_GATES)
    from pipeline.core.io import load_image

    sheet, _ = load_image(tmp_path / "reports" / "dfi" / "photo_size.png")
    assert sheet.shape[1] >= (5 * 256 if chosen is not None else 200)
    # ... and again on the test photos under dfi.shifts (the readable, paired one under each)
    shifted = metrics["photo_size_shifted"]
    if chosen is not None:
        assert shifted["shifts"] == ["warm", "framing"] and shifted["pooled"]["n_faces"] == 2
    else:
        assert shifted.startswith("absent")
    assert (tmp_path / "reports" / "dfi" / "photo_size_shifted.png").exists()

    # What the stage measures is what `dfe attribute` gives: its vector on the same photo, cut out
    # the same way, matches the stage's own composition of that edit (resampled in another order).
    import cv2

    from pipeline.dfi.attribute import AttributeRequest, VectorUse, run_attribute
    from pipeline.dfi.dfi import DFIConfig, change_blend, load_dfi_data, photo_crops
    from pipeline.dfi.vectors import load_vector
    from pipeline.editing.edit import FaceDetector
    from pipeline.models.editor import load_editor
    from pipeline.core.profiles import get_profile

    data = load_dfi_data(root, DFIConfig(), 128)
    row = data.test[0]
    vector = load_vector(tmp_path / "out" / "vectors.safetensors")
    editor = load_editor(models, get_profile(PROFILE), torch.device("cpu"))
    res = run_attribute(AttributeRequest(photo=man.at[row, "path"], uses=[VectorUse(vector)], alpha=1.0),
                        editor, FaceDetector(upsample=0, detect_side=512))
    user = cv2.warpAffine(res.image, data.transforms[row] * 2, (256, 256), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REFLECT)
    crop, _, _ = photo_crops(data, data.test[:1], 256, 128)
    recon = np.load(tmp_path / "out" / "recon.npy")[:1]
    edits = np.load(tmp_path / "out" / "fast_edits.npy")[:1, 1:2]  # alpha 1 (params alphas 0, 1)
    stage = change_blend(crop, recon, edits, data.landmarks[data.test[:1]], shift=data.landmark_shift, alphas=(1.0,))[0, 0]
    moved = np.abs(stage.astype(int) - crop[0]).max(axis=2) > 8
    assert moved.any()  # the edit changed the face ...
    diff = np.abs(user.astype(float) - stage)[moved].mean()
    assert diff < 0.25 * np.abs(stage.astype(float) - crop[0])[moved].mean()  # ... and both paths changed it alike


def _with_photos(src, root, junk=None):
    """data_dir's arrays plus the photos' alignment and paths (what photo-size measurement reads);
    with `junk`, the unpaired test person's photo is that unreadable file."""
    import shutil

    shutil.copytree(src / "aligned", root / "aligned")
    shutil.copytree(src / "split", root / "split")
    save_npy(root / "aligned" / "transforms.npy", np.load(src / "photo_transforms.npy"))
    man = pd.read_csv(root / "aligned" / "manifest.csv", dtype={"identity": str, "id": str})
    man["path"] = (src / "photo_paths.txt").read_text().splitlines()
    if junk is not None:
        man.loc[man["identity"] == "003", "path"] = str(junk)
    save_csv(root / "aligned" / "manifest.csv", man)
    return root


def test_ratio_interval_draws_people_not_shifted_copies():
    from pipeline.dfi.dfi import ratio_interval

    rng = np.random.default_rng(1)
    err, base = rng.uniform(0.03, 0.06, 8), rng.uniform(0.04, 0.06, 8)
    # each person seen under 5 shifts, nearly alike: drawn as items the interval would shrink
    faces = np.repeat(np.arange(8), 5)
    e5, b5 = np.repeat(err, 5) * rng.uniform(0.99, 1.01, 40), np.repeat(base, 5)
    by_person, by_item = ratio_interval(e5, b5, groups=faces), ratio_interval(e5, b5)
    alone = ratio_interval(err, base)
    assert by_person[1] - by_person[0] == pytest.approx(alone[1] - alone[0], rel=0.1)
    assert by_item[1] - by_item[0] < 0.6 * (alone[1] - alone[0])
    assert ratio_interval(e5[:5], b5[:5], groups=faces[:5]) is None  # one person: no interval


def test_shift_photos_finds_each_face_again_under_every_shift(data_dir, tmp_path):
    """Each test photo re-created under a shift is found and aligned anew by dlib, as a user's
    photo is; an unreadable photo is listed with its reason for every shift."""
    from pipeline.dfi.shifted import shift_photos

    src, _ = data_dir
    junk = tmp_path / "003_03.jpg"
    junk.write_bytes(b"not a photo\n" * 20)
    root = _with_photos(src, tmp_path / "data", junk)
    data = load_dfi_data(root, DFIConfig(), 128)
    shifts = ("warm", "framing", "blur_jpeg")
    got = shift_photos(data, data.test, shifts, 256)
    assert got.shift == list(shifts) and got.face.tolist() == [0, 0, 0]  # 007 under each; 003 unreadable
    assert [(r["id"], r["shift"]) for r in got.rejected] == [("neutral__003_03", s) for s in shifts]
    assert all(r["reason"].startswith("unreadable") for r in got.rejected)
    assert got.crops.shape == (3, 256, 256, 3) and got.faces.shape == (3, 128, 128, 3)
    # re-aligned: the shifted faces' landmarks sit where the clean photo's aligned ones do
    own = data.landmarks[data.test[0]]
    assert np.abs(got.landmarks - own[None]).mean() < 2.0
    clean = data.images[data.test[0]].astype(float)
    warm = got.faces[0].astype(float)
    assert warm[..., 0].mean() - warm[..., 2].mean() > clean[..., 0].mean() - clean[..., 2].mean() + 10  # redder light
    assert np.abs(got.faces[2].astype(float) - np.roll(got.faces[2], 1, axis=1)).mean() < \
        np.abs(got.faces[0].astype(float) - np.roll(got.faces[0], 1, axis=1)).mean()  # blurred
    again = shift_photos(data, data.test, shifts, 256)
    assert np.array_equal(again.crops, got.crops)  # seeded: the same shifts every run


def test_measure_shifted_composes_the_smile_into_the_shifted_photo(models, data_dir, tmp_path):
    """The smile on a shifted photo: the composed edit changes only the inner face and keeps the
    person nearer than the whole render does; figures pooled and per shift, with the shifted
    photo itself as the null."""
    from pipeline.core.profiles import get_profile
    from pipeline.dfi.dfi import Evaluator, fast_vectors
    from pipeline.dfi.shifted import measure_shifted, shifted_sheet
    from pipeline.models.editor import load_editor

    src, _ = data_dir
    root = _with_photos(src, tmp_path / "data")
    cfg = DFIConfig.from_params(_params(measure_size=256, shifts=["cool", "noise"]))
    data = load_dfi_data(root, cfg, 128)
    editor = load_editor(models, get_profile(PROFILE), torch.device("cpu"))
    torch.manual_seed(0)
    vectors = fast_vectors(editor, data, cfg, torch.device("cpu"))
    rows = data.test[:1]  # the paired test person
    ev, keep, _, _ = Evaluator.at_photo_size(data, rows, data.pair[:1], 256)
    block, faces, sets = measure_shifted(editor, data, cfg, vectors, torch.device("cpu"), rows[keep], ev, 1.0)

    assert block["alpha"] == 1.0 and block["rejected"] == [] and faces.shift == ["cool", "noise"]
    pooled = block["pooled"]
    assert (pooled["n_faces"], set(block["per_shift"])) == (2, {"cool", "noise"})
    assert pooled["photo"]["same_person"] == 1.0
    assert pooled["n_common"] == 0 or pooled["photo"]["mouth_over_photo"] == pytest.approx(1.0)
    assert pooled["composed"]["mouth_over_photo_ci90"] is None  # one person, however many shifts
    for k in range(2):
        changed = np.abs(sets["composed"][k].astype(int) - sets["photo"][k]).max(axis=2) > 0
        assert changed.any() and not changed[:40].any() and not changed[:, :40].any()  # the face only
    d_comp = ev.embedder.embed(sets["composed"], boxes="aligned") - ev.embedder.embed(sets["photo"], boxes="aligned")
    d_full = ev.embedder.embed(sets["full"], boxes="aligned") - ev.embedder.embed(sets["photo"], boxes="aligned")
    assert np.nanmean(np.linalg.norm(d_comp, axis=1)) < np.nanmean(np.linalg.norm(d_full, axis=1))
    sheet = shifted_sheet(faces, sets)
    assert sheet is not None and sheet.shape[1] > 4 * 160
