"""The evaluate stage on a tiny test split of real aligned London faces with one-step micro models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.evaluation.evaluate import PLOT_FILES, EvalConfig, evaluate, swap_pairs
from pipeline.core.io import save_csv, save_npy
from tests.helpers_models import PROFILE, aligned_london, models, single_thread  # noqa: F401  (fixtures)

PHOTOS = [("neutral", "001_03"), ("neutral", "004_03"), ("smiling", "010_08"), ("smiling", "001_08")]


@pytest.fixture(scope="module")
def split(tmp_path_factory, london):
    """data/aligned + data/sketch + data/components/test for 4 faces; rows shuffled against the
    aligned arrays so `source_row` must be followed."""
    root = tmp_path_factory.mktemp("evaldata")
    faces, lms = aligned_london([london / label / f"{id_}.jpg" for label, id_ in PHOTOS], 128)
    order = np.array([2, 0, 3, 1])  # aligned row k holds PHOTOS[order[k]]
    save_npy(root / "aligned" / "images.npy", faces[order])
    save_npy(root / "aligned" / "landmarks.npy", lms[order])
    sketches = np.full((4, 128, 128), 255, np.uint8)
    sketches[:, 60:62, 20:100] = 0
    save_npy(root / "sketch" / "sketches.npy", sketches)
    source_row = np.argsort(order)  # PHOTOS[i] lives at aligned row source_row[i]
    save_csv(root / "components" / "test" / "manifest.csv", pd.DataFrame({
        "row": range(4), "id": [i for _, i in PHOTOS], "identity": [i[:3] for _, i in PHOTOS],
        "label": [lab for lab, _ in PHOTOS], "source_row": source_row,
    }))
    return root, faces


def test_swap_pairs_skip_same_identity():
    pairs = swap_pairs(["a", "b", "c", "a"], per_face=2)
    ids = np.array(["a", "b", "c", "a"])
    assert len(pairs) == 8
    assert np.all(ids[pairs[:, 0]] != ids[pairs[:, 1]])
    assert pairs[pairs[:, 0] == 0, 1].tolist() == [1, 2]  # face 3 is the same person: skipped
    with pytest.raises(ValueError, match="same identity"):
        swap_pairs(["a", "a"], 1)


def test_evaluate_writes_metrics_and_grids(models, split, tmp_path):
    root, faces = split
    cfg = EvalConfig(
        profile=PROFILE, components=str(root / "components"), aligned=str(root / "aligned"),
        sketches=str(root / "sketch" / "sketches.npy"), models_dir=str(models),
        metrics_path=str(tmp_path / "evaluate.json"), plots_dir=str(tmp_path / "plots"),
        swaps_per_face=2, grid_faces=3, batch_size=3, device="cpu",
    )
    torch.manual_seed(0)
    metrics = evaluate(cfg)
    on_disk = json.loads((tmp_path / "evaluate.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))  # JSON holds exactly what was returned
    assert metrics["n_test"] == 4 and metrics["n_swaps"] == 8
    for key in ("psnr", "ssim"):
        assert np.isfinite(metrics["recon"][key])
    assert -1 <= metrics["recon"]["ssim"] <= 1
    lm = metrics["landmarks"]
    # The real aligned photos are faces dlib finds at 128 px, close to their stored landmarks.
    assert lm["missed_photo"] == 0 and lm["nme_photo"] < 0.1
    assert 0 <= lm["missed_recon"] <= 4 and 0 <= lm["missed_swap"] <= 8
    lab = metrics["lab"]
    for key in ("recon_to_photo", "swap_to_appearance", "swap_to_geometry", "sources_apart",
                "swap_to_appearance_mouth", "swap_to_geometry_bg", "recon_to_photo_eye1"):
        assert lab[key] >= 0, key
    assert lab["sources_apart"] > 0  # different people, different colours
    assert 0 <= lab["swap_follows_appearance"] <= 1
    assert set(metrics["identity"]) >= {"recon_similarity", "recon_distance", "swap_similarity_geometry"}
    assert metrics["fid"].split(":")[0] in ("absent", "available")
    assert metrics["lpips"].split(":")[0] in ("absent", "available")

    import cv2

    for name in PLOT_FILES:
        img = cv2.imread(str(tmp_path / "plots" / name))
        assert img is not None and img.shape[0] >= 3 * 128, name
    swaps = cv2.imread(str(tmp_path / "plots" / "swaps.png"))
    assert swaps.shape[1] >= 4 * 128  # geometry column + 3 appearance columns


def test_swaps_differ_from_reconstructions(models, split):
    """A swap (geometry i, appearance j) is a different image from i's reconstruction."""
    from pipeline.evaluation.evaluate import _render_pairs
    from pipeline.core.tensors import faces_to_tensor
    from pipeline.models.editor import load_editor

    _, faces = split
    editor = load_editor(models, PROFILE)
    x = faces_to_tensor(faces, torch.device("cpu"))
    geo, app = editor.geometry_from_photo(x), editor.appearance_codes(x)
    recon = _render_pairs(editor, geo, app, np.array([[0, 0], [1, 1]]), 2, "r").astype(np.int16)
    swap = _render_pairs(editor, geo, app, np.array([[0, 1], [1, 0]]), 2, "s").astype(np.int16)
    assert np.abs(recon - swap).mean() > 0.5


def test_evaluate_missing_weights_names_the_stage(split, tmp_path):
    root, _ = split
    cfg = EvalConfig(profile=PROFILE, components=str(root / "components"), aligned=str(root / "aligned"),
                     models_dir=str(tmp_path / "nomodels"), device="cpu")
    with pytest.raises(FileNotFoundError, match="train_sketch_ae"):
        evaluate(cfg)
