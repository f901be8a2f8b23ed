"""Metrics: reconstruction, landmark error, Lab colour statistics, dlib identity, optional metrics."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.evaluation import metrics
from pipeline.evaluation.metrics import DLIB_SAME_PERSON_THRESHOLD, DlibFaceEmbedder, identity_distance, identity_similarity, lab_stat_distance, landmark_nme, optional_metric_status, part_lab_stats, psnr, ssim

LONDON = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "london-faces"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# sRGB primaries in CIE Lab (D65), standard reference values.
RED_LAB = (53.24, 80.09, 67.20)
BLUE_LAB = (32.30, 79.19, -107.86)


# ---------------------------------------------------------------- PSNR / SSIM --------------


@pytest.mark.parametrize("device", DEVICES)
def test_psnr_identical_is_infinite_and_known_offsets_give_exact_values(device):
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(2, 3, 16, 16, generator=g) * 1.6 - 0.8).to(device)
    assert torch.isinf(psnr(a, a)).all()
    # Offsets of 0.2 and 0.1 in [-1, 1] are 0.1 and 0.05 in [0, 1]: MSE 1e-2 and 2.5e-3.
    b = a + torch.tensor([0.2, 0.1], device=device).view(2, 1, 1, 1)
    got = psnr(a, b).cpu()
    assert got.shape == (2,)
    assert got[0].item() == pytest.approx(20.0, abs=1e-3)
    assert got[1].item() == pytest.approx(20 * np.log10(20), abs=1e-3)


def test_psnr_drops_as_noise_grows():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 3, 24, 24, generator=g) * 2 - 1
    values = [psnr(a, a + s * torch.randn(a.shape, generator=g)).mean().item() for s in (0.02, 0.1, 0.4)]
    assert values[0] > values[1] > values[2]


@pytest.mark.parametrize("device", DEVICES)
def test_ssim_is_one_for_identical_and_lower_with_noise(device):
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    noisy = a + 0.3 * torch.randn(a.shape, generator=g)
    assert torch.allclose(ssim(a.to(device), a.to(device)).cpu(), torch.ones(2), atol=1e-4)
    s = ssim(a, noisy)
    assert s.shape == (2,) and (s < 0.9).all()


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


# ---------------------------------------------------------------- landmark NME -------------


def _landmarks(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lm = rng.uniform(20, 100, size=(n, 68, 2))
    lm[:, 36] = [30.0, 50.0]
    lm[:, 45] = [90.0, 50.0]  # inter-ocular distance 60
    return lm


def test_nme_zero_for_identical():
    lm = _landmarks(3)
    np.testing.assert_array_equal(landmark_nme(lm, lm), np.zeros(3))


def test_nme_of_translation_is_shift_over_interocular():
    ref = _landmarks(4)
    pred = ref + np.array([3.0, 4.0])  # every point 5 px off
    np.testing.assert_allclose(landmark_nme(pred, ref), np.full(4, 5 / 60))


def test_nme_idx_selects_points():
    ref = _landmarks(2, seed=3)
    pred = ref.copy()
    mouth = list(metrics.LANDMARK_GROUPS["mouth"])
    pred[:, mouth] += np.array([0.0, 6.0])
    np.testing.assert_allclose(landmark_nme(pred, ref, idx=mouth), np.full(2, 6 / 60))
    np.testing.assert_allclose(landmark_nme(pred, ref), np.full(2, 6 * 20 / 68 / 60))
    np.testing.assert_array_equal(landmark_nme(pred, ref, idx=metrics.LANDMARK_GROUPS["eyes"]), 0)


def test_nme_nan_for_missing_face():
    ref = _landmarks(2)
    pred = ref.copy()
    pred[1] = np.nan
    out = landmark_nme(pred, ref)
    assert out[0] == 0 and np.isnan(out[1])


# ---------------------------------------------------------------- Lab statistics -----------


def _red_blue(n: int = 2) -> np.ndarray:
    img = np.zeros((n, 32, 64, 3), np.uint8)
    img[:, :, :32] = (255, 0, 0)
    img[:, :, 32:] = (0, 0, 255)
    return img


@pytest.mark.parametrize("device", DEVICES)
def test_lab_stats_of_constant_colours_match_reference(device):
    boxes = {"left": (4, 4, 24), "right": (36, 4, 24)}
    stats = part_lab_stats(_red_blue(), boxes, device=device)
    assert stats["left"].shape == (2, 6)
    np.testing.assert_allclose(stats["left"][:, :3], np.tile(RED_LAB, (2, 1)), atol=0.1)
    np.testing.assert_allclose(stats["right"][:, :3], np.tile(BLUE_LAB, (2, 1)), atol=0.1)
    np.testing.assert_allclose(stats["left"][:, 3:], 0, atol=1e-3)


def test_lab_stats_accepts_tensors_in_minus_one_one_and_batches():
    imgs = _red_blue(5)
    boxes = {"across": (16, 0, 32)}  # half red, half blue: nonzero std
    ref = part_lab_stats(imgs, boxes)
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    got = part_lab_stats(t, boxes, batch_size=2)
    np.testing.assert_allclose(got["across"], ref["across"], atol=1e-3)
    mid = (np.array(RED_LAB) + np.array(BLUE_LAB)) / 2
    np.testing.assert_allclose(ref["across"][0, :3], mid, atol=0.1)
    np.testing.assert_allclose(ref["across"][0, 3:], np.abs(np.array(RED_LAB) - BLUE_LAB) / 2, atol=0.1)


def test_lab_stat_distance_is_delta_e_of_means():
    boxes = {"p": (0, 0, 16)}
    red = part_lab_stats(_red_blue(1), boxes)
    blue = part_lab_stats(_red_blue(1)[:, :, ::-1].copy(), boxes)  # mirrored: blue at the left
    d = lab_stat_distance(red, blue)["p"]
    assert d.shape == (1,)
    assert d[0] == pytest.approx(np.linalg.norm(np.array(RED_LAB) - BLUE_LAB), abs=0.2)
    assert lab_stat_distance(red, red)["p"][0] == 0


def test_lab_stats_rejects_box_outside_image():
    with pytest.raises(ValueError, match="outside"):
        part_lab_stats(_red_blue(1), {"p": (100, 0, 8)})


# ---------------------------------------------------------------- dlib identity ------------


def _london(rel: str, size: int = 512) -> np.ndarray:
    path = LONDON / rel
    if not path.exists():
        pytest.skip(f"London face set not at {LONDON}")
    bgr = cv2.imread(str(path))
    return cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def embedder() -> DlibFaceEmbedder:
    return DlibFaceEmbedder()


def test_same_person_closer_than_different_people(embedder):
    imgs = [_london("neutral/001_03.jpg"), _london("smiling/001_08.jpg"), _london("neutral/002_03.jpg")]
    e = embedder.embed(imgs)
    assert e.shape == (3, 128) and e.dtype == np.float32 and np.isfinite(e).all()
    same = identity_distance(e[0:1], e[1:2])[0]
    other = identity_distance(e[0:1], e[2:3])[0]
    assert same < DLIB_SAME_PERSON_THRESHOLD < other
    sim = identity_similarity(e[[0, 0]], e[[1, 2]])
    assert sim[0] > sim[1]


def test_no_face_gives_nan_row(embedder):
    grey = np.full((200, 200, 3), 128, np.uint8)
    e = embedder.embed([grey, _london("neutral/002_03.jpg", 256)])
    assert np.isnan(e[0]).all() and np.isfinite(e[1]).all()
    assert np.isnan(identity_distance(e[:1], e[1:])).all()


def test_aligned_box_matches_detection_on_aligned_crop(embedder):
    from pipeline.data.align import alignment_transform, warp_face
    from pipeline.data.landmarks import DlibBackend

    photo = _london("neutral/001_03.jpg")
    det = DlibBackend().detect(photo)
    assert det is not None
    crop = warp_face(photo, alignment_transform(det.landmarks, 128), 128)
    e_photo = embedder.embed([photo])[0]
    e_aligned = embedder.embed([crop], boxes="aligned")[0]
    e_detect = embedder.embed([crop])[0]
    assert np.linalg.norm(e_aligned - e_photo) < 0.3
    assert np.linalg.norm(e_aligned - e_detect) < 0.3


def test_explicit_boxes_and_none(embedder):
    img = _london("neutral/001_03.jpg", 256)
    e = embedder.embed([img, img], boxes=[(0, 0, 255, 255), None])
    assert np.isfinite(e[0]).all() and np.isnan(e[1]).all()
    with pytest.raises(ValueError, match="boxes"):
        embedder.embed([img], boxes=[None, None])


def test_missing_model_files_name_the_package(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="face-recognition-models"):
        DlibFaceEmbedder(models_dir=tmp_path)
    monkeypatch.setenv("DFE_DLIB_MODELS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        DlibFaceEmbedder()


# ---------------------------------------------------------------- optional metrics ---------


def test_optional_metric_status_reports_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    status = optional_metric_status()
    assert set(status) == {"fid", "lpips"}
    assert status["fid"].startswith("absent: ") and "pt_inception-2015-12-05-6726825d.pth" in status["fid"]
    # Once the Inception weights are in the hub cache the weights stop being a reason.
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"x")
    status = optional_metric_status()
    assert "Inception weights" not in status["fid"]


def test_dlib_models_load_once_and_each_backend_detects_with_its_own_detector(embedder):
    """Backends and embedders made later in a process reuse the loaded models: the read-only
    shape predictor is shared, each gets its own detector (it keeps per-call state), and what
    they find is what a backend of its own finds."""
    from pipeline.data.landmarks import DlibBackend

    photos = [_london("neutral/001_03.jpg"), _london("smiling/002_08.jpg")]
    first, second = DlibBackend(), DlibBackend()
    assert first.predictor is second.predictor and first.detector is not second.detector
    for photo in photos:
        a, b = first.detect(photo), second.detect(photo)
        assert a is not None and np.array_equal(a.landmarks, b.landmarks) and a.score == b.score
    again = DlibFaceEmbedder()
    assert again._predictor is embedder._predictor and again._detector is not embedder._detector
    assert np.array_equal(again.embed(photos), embedder.embed(photos))
