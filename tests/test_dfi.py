"""DFI: features, attribute vectors, neighbour selection, L-BFGS reconstruction, fast DFI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.dfi.interpolation import apply_learned_dfi, attribute_vector, dfi_edit, dfi_features, dfi_reconstruct, dfi_targets, learned_attribute_vectors, mean_dfi_features, nearest_split, select_neighbours, total_variation
from pipeline.models.vgg import VGG19Features


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    torch.manual_seed(0)
    return VGG19Features().eval().requires_grad_(False)


def smooth_image(size: int, seed: int) -> torch.Tensor:
    """A face-like smooth random image (1, 3, S, S) in [-1, 1]: upsampled low-res noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, size // 8, size // 8, generator=g) * 1.6 - 0.8
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def test_features_shape_and_unit_norm(vgg: VGG19Features) -> None:
    x = torch.cat([smooth_image(32, 0), smooth_image(32, 1)])
    raw = dfi_features(vgg, x, normalise=False)
    sizes = [256 * 8 * 8, 512 * 4 * 4, 512 * 2 * 2]  # relu3_1, relu4_1, relu5_1 at 32 px
    assert raw.shape == (2, sum(sizes))
    phi = dfi_features(vgg, x)
    torch.testing.assert_close(phi.norm(dim=1), torch.ones(2))
    for block_raw, block in zip(raw.split(sizes, 1), phi.split(sizes, 1)):
        torch.testing.assert_close(block.norm(dim=1), torch.full((2,), 3**-0.5))
        torch.testing.assert_close(block, block_raw / block_raw.norm(dim=1, keepdim=True) * 3**-0.5)
    torch.testing.assert_close(mean_dfi_features(vgg, x, batch_size=1), phi.mean(0))


def test_attribute_vector_is_mean_difference() -> None:
    g = torch.Generator().manual_seed(3)
    phi_t, phi_s = torch.randn(5, 40, generator=g) + 1.0, torch.randn(7, 40, generator=g)
    w = attribute_vector(phi_t, phi_s, normalise=False)
    torch.testing.assert_close(w, phi_t.sum(0) / 5 - phi_s.sum(0) / 7)
    unit = attribute_vector(phi_t, phi_s)
    torch.testing.assert_close(unit.norm(), torch.tensor(1.0))
    torch.testing.assert_close(unit * w.norm(), w)
    targets = dfi_targets(phi_s[0], unit, [0.0, 0.4])
    torch.testing.assert_close(targets, torch.stack([phi_s[0], phi_s[0] + 0.4 * unit]))


def test_nearest_split_picks_nearest_per_side_and_group() -> None:
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(30, 4))
    has = np.arange(30) % 2 == 0
    eligible = np.arange(30) % 3 != 0
    query = rng.normal(size=4)
    nb = nearest_split(query, pool, has, 3, eligible)
    dist = np.linalg.norm(pool - query, axis=1)
    for picked, side in ((nb.source, ~has), (nb.target, has)):
        candidates = np.flatnonzero(side & eligible)
        assert set(picked) == set(candidates[np.argsort(dist[candidates])[:3]])
    assert np.all(np.diff(nb.source_dist) >= 0) and np.all(np.diff(nb.target_dist) >= 0)
    with pytest.raises(ValueError, match="need k=20"):
        nearest_split(query, pool, has, 20, eligible)


def test_select_neighbours_respects_gender_and_attributes() -> None:
    pool = pd.DataFrame(
        {
            "face_age": [30, 30, 31, 50, 29, 60, 30, 45, 31, 70],
            "face_gender": ["male", "female", "female", "female", "female", "female", "male", "female", "female", "female"],
            "face_eth": ["white", "white", "white", "white", "black", "white", "white", "white", "white", "white"],
        }
    )  # fmt: skip
    smiling = np.array([False, False, False, False, False, True, True, True, True, True])
    query = pd.Series({"face_age": 30, "face_gender": "female", "face_eth": "white"})
    nb = select_neighbours(query, pool, smiling, k=2)
    # Same-age white women first; the 30-year-old men (rows 0 and 6) are never eligible.
    assert list(nb.source) == [1, 2] and list(nb.target) == [8, 7]
    assert set(pool.loc[np.r_[nb.source, nb.target], "face_gender"]) == {"female"}
    assert list(select_neighbours(query, pool, smiling, k=2, gender_key=None).target) == [6, 8]


def test_select_neighbours_uses_landmark_shape() -> None:
    rng = np.random.default_rng(1)
    query_lm = rng.normal(size=(68, 2))
    other = rng.normal(size=(68, 2))
    # Row 1 is the query's shape moved and scaled (same shape), row 0 another shape.
    pool_lm = np.stack([other, query_lm * 3 + 5, other * 2, query_lm + 1])
    pool = pd.DataFrame({"face_age": [30] * 4, "face_gender": ["f"] * 4, "face_eth": ["x"] * 4})
    query = pd.Series({"face_age": 30, "face_gender": "f", "face_eth": "x"})
    has = np.array([False, False, True, True])
    nb = select_neighbours(query, pool, has, 1, query_landmarks=query_lm, pool_landmarks=pool_lm)
    assert nb.source[0] == 1 and nb.target[0] == 3
    np.testing.assert_allclose([nb.source_dist[0], nb.target_dist[0]], 0.0, atol=1e-9)


def test_total_variation_definition_and_scaling() -> None:
    z = torch.zeros(1, 1, 3, 3)
    z[0, 0, :, 2] = 1.0  # a vertical step between columns 1 and 2
    # Cropped to the 2x2 top-left region with both right and down neighbours: 2 steps of 1.
    assert total_variation(z).item() == pytest.approx(2.0)
    assert total_variation(torch.full((2, 3, 8, 8), 0.3)).tolist() == [0.0, 0.0]
    x = smooth_image(32, 4)
    assert total_variation(3 * x).item() == pytest.approx(9 * total_variation(x).item(), rel=1e-5)
    assert total_variation(3 * x, beta=1.0).item() == pytest.approx(3 * total_variation(x, beta=1.0).item(), rel=1e-3)


def test_reconstruction_loss_falls_for_an_alpha_batch(vgg: VGG19Features) -> None:
    x = smooth_image(32, 5)
    phi_x = dfi_features(vgg, x)
    w = attribute_vector(dfi_features(vgg, smooth_image(32, 6)), phi_x)
    alphas = [0.0, 0.4, 0.8]
    result = dfi_reconstruct(vgg, x, dfi_targets(phi_x, w, alphas), tv_weight=0.0, iters=4)
    hist = result.loss_history
    assert hist.shape == (5, 3) and result.images.shape == (3, 3, 32, 32)
    assert result.images.min() >= -1 and result.images.max() <= 1
    # alpha 0 with no TV: z = x is already optimal (loss 0, zero gradient) and stays put.
    assert hist[:, 0].abs().max() < 1e-8
    torch.testing.assert_close(result.images[0:1], x, atol=1e-5, rtol=0)
    # Initial feature loss is exactly alpha^2 / 2 (unit-norm w), then it falls.
    torch.testing.assert_close(hist[0, 1:], torch.tensor([0.08, 0.32]), rtol=1e-4, atol=1e-6)
    assert torch.all(hist[-1, 1:] < 0.85 * hist[0, 1:])
    assert torch.all(hist.sum(1).diff() <= 1e-7)  # strong-Wolfe L-BFGS never raises the summed loss
    assert not torch.allclose(result.images[1], result.images[2])
    # dfi_edit = targets + reconstruct (one iteration is enough to compare).
    edited = dfi_edit(vgg, x, w, alphas[1:], tv_weight=0.0, iters=1)
    torch.testing.assert_close(edited.loss_history[0], hist[0, 1:])


def test_tv_term_smooths_noise(vgg: VGG19Features) -> None:
    g = torch.Generator().manual_seed(7)
    x = (smooth_image(32, 8) + 0.2 * torch.randn(1, 3, 32, 32, generator=g)).clamp(-1, 1)
    target = dfi_features(vgg, x)
    tv0 = total_variation(x).item()
    plain = dfi_reconstruct(vgg, x, target, tv_weight=0.0, iters=3).images
    smoothed = dfi_reconstruct(vgg, x, target, tv_weight=1e-6, iters=3).images
    assert total_variation(plain).item() == pytest.approx(tv0, rel=1e-4)
    assert total_variation(smoothed).item() < 0.8 * tv0


def latents(seed: int, n: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    z = {"eye1": torch.randn(n, 8, 2, 2, generator=g), "mouth": 3 * torch.randn(n, 8, 3, 3, generator=g)}
    codes = {"eye1": torch.randn(n, 6, generator=g), "mouth": torch.randn(n, 6, generator=g) + 2}
    return z, codes


def test_learned_vectors_are_mean_differences_scaled_per_part() -> None:
    (zw, cw), (zo, co) = latents(0, 5), latents(1, 4)
    raw = learned_attribute_vectors(zw, zo, cw, co, normalise=False)
    torch.testing.assert_close(raw["mouth"]["geometry"], zw["mouth"].mean(0) - zo["mouth"].mean(0))
    torch.testing.assert_close(raw["eye1"]["appearance"], cw["eye1"].mean(0) - co["eye1"].mean(0))
    vec = learned_attribute_vectors(zw, zo, cw, co)
    for part in ("eye1", "mouth"):
        both = torch.cat([zw[part], zo[part]]).flatten(1)
        torch.testing.assert_close(vec[part]["geometry"].norm(), both.norm(dim=1).mean())
        cos = torch.nn.functional.cosine_similarity(vec[part]["geometry"].flatten(), raw[part]["geometry"].flatten(), 0)
        assert cos.item() == pytest.approx(1.0, abs=1e-5)
    assert vec["mouth"]["geometry"].norm() > 2 * vec["eye1"]["geometry"].norm()  # mouth latents are 3x larger


def test_apply_learned_dfi_identity_and_addition() -> None:
    (zw, cw), (zo, co) = latents(0, 5), latents(1, 4)
    vec = learned_attribute_vectors(zw, zo, cw, co)
    z, codes = latents(2, 3)
    z_before = {k: v.clone() for k, v in z.items()}
    z0, c0 = apply_learned_dfi(z, codes, vec, 0.0)
    for part in z:
        assert torch.equal(z0[part], z[part]) and torch.equal(c0[part], codes[part])
    z1, c1 = apply_learned_dfi(z, codes, vec, 1.0)
    for part in z:
        torch.testing.assert_close(z1[part], z[part] + vec[part]["geometry"])
        torch.testing.assert_close(c1[part], codes[part] + vec[part]["appearance"])
    assert all(torch.equal(z[k], z_before[k]) for k in z)  # inputs untouched
    # Per-part alphas edit only the named parts; spaces restrict to geometry.
    z2, c2 = apply_learned_dfi(z, codes, vec, {"mouth": 0.5}, spaces=("geometry",))
    assert z2["eye1"] is z["eye1"] and c2["mouth"] is codes["mouth"]
    torch.testing.assert_close(z2["mouth"], z["mouth"] + 0.5 * vec["mouth"]["geometry"])
    with pytest.raises(ValueError, match="mouth geometry"):
        apply_learned_dfi({"mouth": torch.zeros(1, 8, 2, 2)}, codes, vec, 1.0, parts=["mouth"])
