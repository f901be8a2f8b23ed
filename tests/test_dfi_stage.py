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

# (identity, label, split, gender): two training people with both photos, a test person with
# both (a London pair) and a test person with only the neutral photo (edited, not evaluated).
FACES = [
    ("001", "neutral", "train"), ("001", "smiling", "train"),
    ("002", "neutral", "train"), ("002", "smiling", "train"),
    ("007", "neutral", "test"), ("007", "smiling", "test"),
    ("003", "neutral", "test"),
]  # fmt: skip
SUFFIX = {"neutral": "03", "smiling": "08"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, london):
    """data/aligned + data/split in the real layout (all four people are female in London's info.csv)."""
    root = tmp_path_factory.mktemp("dfidata")
    ids = [f"{ident}_{SUFFIX[label]}" for ident, label, _ in FACES]
    faces, lms = aligned_london([london / label / f"{i}.jpg" for i, (_, label, _) in zip(ids, FACES)], 128)
    save_npy(root / "aligned" / "images.npy", faces)
    save_npy(root / "aligned" / "landmarks.npy", lms)
    n = len(FACES)
    save_csv(root / "aligned" / "manifest.csv", pd.DataFrame({
        "row": range(n), "id": [f"{lab}__{i}" for i, (_, lab, _) in zip(ids, FACES)],
        "identity": [f[0] for f in FACES], "label": [f[1] for f in FACES], "path": ids,
        "age": [24.0, 24.0, 24.0, 24.0, 21.0, 21.0, 38.0], "gender": ["female"] * n, "ethnicity": ["white"] * n,
    }))
    save_csv(root / "split" / "split.csv", pd.DataFrame({
        "id": [f"{lab}__{i}" for i, (_, lab, _) in zip(ids, FACES)], "identity": [f[0] for f in FACES],
        "split": [f[2] for f in FACES],
    }))
    return root, faces


def _params(**kw):
    base = dict(profile=PROFILE, alphas=[0.0, 1.0], parts=["mouth", "bg"], spaces=["geometry", "appearance"],
                grid_faces=2, batch_size=4, classic_faces=1, classic_k=1, classic_alphas=[0.0, 0.4],
                classic_iters=2)
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


def test_run_dfi_fast_and_classic_absent(models, data_dir, tmp_path, monkeypatch):
    root, faces = data_dir
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    torch.manual_seed(0)
    metrics = run_dfi(_params(), root, models, tmp_path / "out", tmp_path / "reports", "cpu")

    assert json.loads((tmp_path / "reports" / "dfi.json").read_text()) == json.loads(json.dumps(metrics))
    assert (metrics["n_train_with"], metrics["n_train_without"], metrics["n_test"], metrics["n_pairs"]) == (2, 2, 2, 1)
    assert metrics["classic"].startswith("absent: VGG-19 ImageNet weights not found")
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
    classic = metrics["classic"]
    assert isinstance(classic, dict) and classic["n_faces"] == 1 and classic["iters"] == 2
    assert set(classic) >= {"alpha_0", "alpha_0p4", "seconds_per_image"}
    edits = np.load(tmp_path / "out" / "classic_edits.npy")
    assert edits.shape == (1, 2, 128, 128, 3)
    # From z = x, alpha 0 has nothing to move towards; alpha 0.4 does.
    photo = faces[4].astype(float)
    assert np.abs(edits[0, 0] - photo).mean() < np.abs(edits[0, 1] - photo).mean()
