"""Deep Feature Interpolation (Upchurch et al., CVPR 2017) and its fast variant in our learned spaces.

Classic DFI edits a face x towards an attribute (e.g. smile) in VGG-19 feature space and
reconstructs an image by optimisation:

1. `select_neighbours`: source set S = K nearest faces without the attribute, target set T =
   K nearest with it (nearest by the other attributes and the landmark shape, same gender).
2. `attribute_vector`: w = mean phi(T) - mean phi(S), normalised to unit length.
3. target features phi(x) + alpha * w for several alphas (`dfi_targets`).
4. `dfi_reconstruct`: z = argmin 1/2 ||phi(z) - target||^2 + lambda * TV(z), L-BFGS from z = x,
   all alphas optimised together as one batch.

Feature convention (`dfi_features(normalise=True)`, our default): each layer's post-ReLU map
is flattened and scaled to unit L2 norm per image, and the concatenation is divided by
sqrt(n_layers), so ||phi(x)|| = 1 and every layer weighs the same whatever its size. With a
unit-norm w, alpha is then the step as a fraction of the feature norm: DESIGN's alpha ~ 0.4.
`normalise=False` gives the raw concatenation the official code used.

TV scale: the official weight (0.001) is for images on a 0-255 scale; our images are in
[-1, 1], i.e. 0-255 = 127.5 * z + const, so TV_255(z) = 127.5**beta * TV(z). `tv_weight` is
always given on the official 0-255 scale and converted inside `dfi_reconstruct`. Note the
feature term's scale also differs from the official one (unit-norm here, raw Caffe VGG there),
so 0.001 is not the right balance for unit-norm features; see `dfi_reconstruct`.

Fast DFI (`learned_attribute_vectors`, `apply_learned_dfi`): the same mean-difference idea in
DeepFaceEditing's per-part geometry latents and appearance codes. No VGG and no optimisation:
the edited latents go through the generators and fusion once (done by the caller), and the
edited geometry also decodes to an editable sketch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.core.progress import make_progress
from pipeline.models.vgg import DFI_LAYERS, VGG19Features

# 0-255 pixel units per unit of our [-1, 1] image scale.
PIXEL_SCALE = 127.5

SPACES: tuple[str, ...] = ("geometry", "appearance")


# --------------------------------------------------------------------------- VGG features


def dfi_features(
    vgg: VGG19Features, x: Tensor, layers: Sequence[str] = DFI_LAYERS, normalise: bool = True
) -> Tensor:
    """phi(x): post-ReLU VGG-19 `layers` flattened and concatenated -> (B, D).

    With `normalise`, each layer block is unit-norm per image and the whole vector has norm 1
    (module docstring). Differentiable: `dfi_reconstruct` optimises through it.
    """
    acts = vgg(x, layers)
    blocks = [a.flatten(1) for a in acts.values()]
    if normalise:
        scale = 1.0 / math.sqrt(len(blocks))
        blocks = [F.normalize(b, dim=1) * scale for b in blocks]
    return torch.cat(blocks, dim=1)


@torch.no_grad()
def mean_dfi_features(
    vgg: VGG19Features,
    images: Tensor,
    layers: Sequence[str] = DFI_LAYERS,
    normalise: bool = True,
    batch_size: int = 8,
) -> Tensor:
    """mean_n phi(images[n]) -> (D,), in batches so K x D never has to fit in memory at once."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"want a non-empty (N, 3, H, W) batch, got {tuple(images.shape)}")
    device = next(vgg.parameters()).device
    total: Tensor | None = None
    for start in range(0, images.shape[0], batch_size):
        phi = dfi_features(vgg, images[start : start + batch_size].to(device), layers, normalise)
        total = phi.sum(0) if total is None else total + phi.sum(0)
    assert total is not None
    return total / images.shape[0]


def attribute_vector(phi_target: Tensor, phi_source: Tensor, normalise: bool = True) -> Tensor:
    """w = mean phi(T) - mean phi(S) -> (D,); unit length when `normalise`.

    Each input is (K, D) features or an already averaged (D,) vector.
    """
    mean_t = phi_target.mean(0) if phi_target.ndim == 2 else phi_target
    mean_s = phi_source.mean(0) if phi_source.ndim == 2 else phi_source
    if mean_t.ndim != 1 or mean_t.shape != mean_s.shape:
        raise ValueError(f"feature shapes differ: {tuple(phi_target.shape)} vs {tuple(phi_source.shape)}")
    w = mean_t - mean_s
    return F.normalize(w, dim=0) if normalise else w


def dfi_targets(phi_x: Tensor, w: Tensor, alphas: Sequence[float]) -> Tensor:
    """phi(x) + alpha * w for each alpha -> (A, D); phi_x is (D,) or (1, D)."""
    phi_x = phi_x.reshape(-1)
    if phi_x.shape != w.shape:
        raise ValueError(f"phi(x) {tuple(phi_x.shape)} and w {tuple(w.shape)} differ")
    a = torch.as_tensor(list(alphas), dtype=w.dtype, device=w.device).view(-1, 1)
    return phi_x.unsqueeze(0) + a * w.unsqueeze(0)


# --------------------------------------------------------------------------- reconstruction


def total_variation(z: Tensor, beta: float = 2.0) -> Tensor:
    """The DFI paper's R^beta(z) = sum_{c,i,j} ((z[i,j+1]-z[i,j])^2 + (z[i+1,j]-z[i,j])^2)^(beta/2) -> (B,).

    On the scale z is given in (callers convert; see `dfi_reconstruct`).
    """
    dx = z[:, :, :-1, 1:] - z[:, :, :-1, :-1]
    dy = z[:, :, 1:, :-1] - z[:, :, :-1, :-1]
    sq = dx.square() + dy.square()
    if beta != 2.0:
        sq = (sq + 1e-8).pow(beta / 2)  # eps: the power's gradient is infinite at 0 for beta < 2
    return sq.flatten(1).sum(1)


@dataclass
class DFIResult:
    images: Tensor  # (A, 3, H, W) in [-1, 1], one per alpha (on x's device)
    loss_history: Tensor  # (iters + 1, A) objective per alpha at the start of each iteration, then final
    evaluations: int  # VGG forward+backward passes (L-BFGS line search included, final loss excluded)


def dfi_reconstruct(
    vgg: VGG19Features,
    x: Tensor,
    target_features: Tensor,
    layers: Sequence[str] = DFI_LAYERS,
    tv_weight: float = 5e-10,
    iters: int = 150,
    *,
    normalise: bool = True,
    tv_beta: float = 2.0,
    history_size: int = 10,
    progress: bool = False,
) -> DFIResult:
    """Optimise z (from z = x) to minimise 1/2 ||phi(z) - t||^2 + tv_weight * TV_255(z) per target t.

    x: (1, 3, H, W) or (A, 3, H, W) in [-1, 1]; target_features: (A, D), one row per alpha
    (`dfi_targets`). The A problems are independent but share one L-BFGS run over the batch
    (their objectives are summed; one VGG pass per evaluation serves all alphas). Runs on x's
    device; `vgg` must live there too. `normalise` must match how the targets were made.

    tv_weight is on the official 0-255 scale (TV_255 = 127.5**beta * TV of our [-1, 1] z).
    The official 0.001 balanced raw Caffe activations (orders of magnitude larger); with
    unit-norm features the feature term starts at exactly alpha^2/2 (0.08 at alpha 0.4), while
    TV_255 of a London face photo is ~1.1e7 at 128 px (~2.1e7 at 256 px: it grows about
    linearly with size). The default 5e-10 puts the TV term at ~7% of the initial feature term at 128 px, and 0.001
    would swamp it ~1e5-fold. It is an estimate to tune once the ImageNet weights are present.
    z is unconstrained during the optimisation; the result is clamped to [-1, 1].
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be (B, 3, H, W), got {tuple(x.shape)}")
    if target_features.ndim != 2:
        raise ValueError(f"target_features must be (A, D), got {tuple(target_features.shape)}")
    n = target_features.shape[0]
    if x.shape[0] not in (1, n):
        raise ValueError(f"x has batch {x.shape[0]}, targets have {n}: want 1 or equal")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    target = target_features.detach().to(x.device)
    z = x.detach().expand(n, -1, -1, -1).clone().requires_grad_(True)
    tv_scale = tv_weight * PIXEL_SCALE**tv_beta

    def objective(img: Tensor) -> Tensor:
        phi = dfi_features(vgg, img, layers, normalise)
        if phi.shape != target.shape:
            raise ValueError(f"phi(z) {tuple(phi.shape)} vs targets {tuple(target.shape)}: layers/size mismatch")
        return 0.5 * (phi - target).square().sum(1) + tv_scale * total_variation(img, tv_beta)

    # Tolerances off: the iteration budget decides (unit-norm features give small gradients
    # that the default tolerances would mistake for convergence).
    opt = torch.optim.LBFGS(
        [z], lr=1.0, max_iter=1, history_size=history_size, tolerance_grad=0.0,
        tolerance_change=0.0, line_search_fn="strong_wolfe",
    )  # fmt: skip
    history: list[Tensor] = []
    evaluations = 0
    record = True
    # One step() per iteration (for the progress bar and the history) makes L-BFGS re-evaluate
    # the iterate its line search just evaluated: a cache keyed on z's values skips that pass.
    cache: tuple[Tensor, Tensor, Tensor] | None = None  # (z, per-alpha loss, gradient)

    def closure() -> Tensor:
        nonlocal evaluations, record, cache
        if cache is not None and torch.equal(cache[0], z):
            per_alpha, grad = cache[1], cache[2]
        else:
            per_alpha = objective(z)
            # Gradient w.r.t. z only: never touches (or accumulates into) the VGG's parameters.
            (grad,) = torch.autograd.grad(per_alpha.sum(), z)
            per_alpha = per_alpha.detach()
            cache = (z.detach().clone(), per_alpha, grad)
            evaluations += 1
        z.grad = grad.clone()  # L-BFGS may modify the gradient it is handed
        if record:  # the first evaluation of a step is at the iterate itself
            history.append(per_alpha.cpu())
            record = False
        return per_alpha.sum()

    with make_progress() as bar:
        task = bar.add_task("DFI L-BFGS", total=iters, visible=progress)
        for _ in range(iters):
            record = True
            opt.step(closure)
            bar.update(task, advance=1, description=f"DFI L-BFGS loss {history[-1].mean():.4g}")
    if cache is not None and torch.equal(cache[0], z):
        history.append(cache[1].cpu())
    else:
        with torch.no_grad():
            history.append(objective(z).cpu())
    return DFIResult(images=z.detach().clamp(-1, 1), loss_history=torch.stack(history), evaluations=evaluations)


def dfi_edit(
    vgg: VGG19Features,
    x: Tensor,
    w: Tensor,
    alphas: Sequence[float],
    layers: Sequence[str] = DFI_LAYERS,
    normalise: bool = True,
    **reconstruct_kwargs,
) -> DFIResult:
    """Edit one image x (1, 3, H, W) along w for every alpha: targets + `dfi_reconstruct`."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"dfi_edit edits one image (1, 3, H, W), got {tuple(x.shape)}")
    with torch.no_grad():
        phi_x = dfi_features(vgg, x, layers, normalise)
    targets = dfi_targets(phi_x, w.to(phi_x.device), alphas)
    return dfi_reconstruct(vgg, x, targets, layers, normalise=normalise, **reconstruct_kwargs)


# --------------------------------------------------------------------------- neighbours


@dataclass
class Neighbours:
    source: np.ndarray  # (k,) pool indices of the nearest faces WITHOUT the attribute (S)
    target: np.ndarray  # (k,) pool indices of the nearest faces WITH the attribute (T)
    source_dist: np.ndarray  # (k,) their distances, ascending
    target_dist: np.ndarray  # (k,)


def nearest_split(
    query: np.ndarray,
    pool: np.ndarray,
    pool_has_attr: np.ndarray,
    k: int,
    eligible: np.ndarray | None = None,
) -> Neighbours:
    """K nearest pool rows without / with the attribute, among `eligible` rows (Euclidean).

    query (F,), pool (N, F) distance features; pool_has_attr, eligible: (N,) bool. Raises if
    either side has fewer than k eligible rows (a smaller K would silently weaken w).
    """
    pool = np.asarray(pool, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64).reshape(-1)
    has = np.asarray(pool_has_attr, dtype=bool)
    if pool.ndim != 2 or pool.shape[1] != query.shape[0] or has.shape != (pool.shape[0],):
        raise ValueError(f"shapes: query {query.shape}, pool {pool.shape}, has_attr {has.shape}")
    ok = np.ones_like(has) if eligible is None else np.asarray(eligible, dtype=bool)
    dist = np.linalg.norm(pool - query, axis=1)
    picks = []
    for side in (~has & ok, has & ok):
        idx = np.flatnonzero(side)
        if idx.size < k:
            raise ValueError(f"only {idx.size} eligible faces on one side of the attribute, need k={k}")
        idx = idx[np.argsort(dist[idx], kind="stable")[:k]]
        picks.append((idx, dist[idx]))
    (s, ds), (t, dt) = picks
    return Neighbours(source=s, target=t, source_dist=ds, target_dist=dt)


def normalise_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(N, P, 2) -> (N, 2P): centred and scaled to unit RMS radius, so only shape remains."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[2] != 2:
        raise ValueError(f"landmarks must be (N, P, 2), got {lm.shape}")
    lm = lm - lm.mean(axis=1, keepdims=True)
    rms = np.sqrt((lm**2).sum(2).mean(1))
    return (lm / np.maximum(rms, 1e-12)[:, None, None]).reshape(len(lm), -1)


def attribute_matrix(
    attrs: pd.DataFrame,
    numeric: Sequence[str] = ("face_age",),
    categorical: Sequence[str] = ("face_eth",),
    landmarks: np.ndarray | None = None,
    landmark_weight: float = 1.0,
) -> np.ndarray:
    """Distance features (N, F) for `nearest_split`, from an attribute table (+ landmark shape).

    Numeric columns are z-scored; each categorical column is one-hot scaled by 1/sqrt(2), so
    differing values are at distance 1 like one standard deviation of a numeric column. The
    landmark block (`normalise_landmarks`, z-scored per coordinate) is scaled so its expected
    squared distance equals `landmark_weight` times that of one numeric column.
    Standardisation uses these rows, so build it over query and pool together.
    """
    cols: list[np.ndarray] = []
    for name in numeric:
        v = attrs[name].to_numpy(dtype=np.float64)
        cols.append(((v - v.mean()) / (v.std() or 1.0))[:, None])
    for name in categorical:
        cols.append(pd.get_dummies(attrs[name].astype(str)).to_numpy(dtype=np.float64) / math.sqrt(2))
    if landmarks is not None:
        if len(landmarks) != len(attrs):
            raise ValueError(f"{len(landmarks)} landmark sets for {len(attrs)} rows")
        lm = normalise_landmarks(landmarks)
        std = lm.std(0)
        lm = (lm - lm.mean(0)) / np.where(std > 0, std, 1.0)
        cols.append(lm * math.sqrt(landmark_weight / lm.shape[1]))
    if not cols:
        raise ValueError("no attributes to measure distance with")
    return np.concatenate(cols, axis=1)


def select_neighbours(
    query_attrs: pd.Series,
    pool_attrs: pd.DataFrame,
    pool_has_attr: np.ndarray | pd.Series,
    k: int,
    gender_key: str | None = "face_gender",
    numeric: Sequence[str] = ("face_age",),
    categorical: Sequence[str] = ("face_eth",),
    query_landmarks: np.ndarray | None = None,
    pool_landmarks: np.ndarray | None = None,
    landmark_weight: float = 1.0,
) -> Neighbours:
    """DFI's S and T sets for one query face: K nearest pool faces without / with the attribute.

    Nearest by the `numeric`/`categorical` attribute columns and (when given) landmark shape
    ((P, 2) for the query, (N, P, 2) for the pool; pass only points the attribute does not
    move, e.g. no mouth points for smile). With `gender_key`, only pool faces of the query's
    gender are eligible. The pool must already exclude the query's own identity. Returned
    indices are positions in `pool_attrs`.
    """
    n = len(pool_attrs)
    has = np.asarray(pool_has_attr, dtype=bool)
    if has.shape != (n,):
        raise ValueError(f"pool_has_attr has shape {has.shape}, pool has {n} rows")
    table = pd.concat([query_attrs.to_frame().T, pool_attrs], ignore_index=True)
    table[list(numeric)] = table[list(numeric)].astype(np.float64)
    landmarks = None
    if (query_landmarks is None) != (pool_landmarks is None):
        raise ValueError("give landmarks for both the query and the pool, or for neither")
    if query_landmarks is not None and pool_landmarks is not None:
        landmarks = np.concatenate([np.asarray(query_landmarks)[None], np.asarray(pool_landmarks)])
    feats = attribute_matrix(table, numeric, categorical, landmarks, landmark_weight)
    eligible = None
    if gender_key is not None:
        eligible = (pool_attrs[gender_key] == query_attrs[gender_key]).to_numpy()
    return nearest_split(feats[0], feats[1:], has, k, eligible)


# --------------------------------------------------------------------------- fast DFI


def _mean_norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(dim=1).mean()


def learned_attribute_vectors(
    geo_feats_with: Mapping[str, Tensor],
    geo_feats_without: Mapping[str, Tensor],
    codes_with: Mapping[str, Tensor],
    codes_without: Mapping[str, Tensor],
    normalise: bool = True,
) -> dict[str, dict[str, Tensor]]:
    """Per-part attribute vectors in the learned spaces: mean(with) - mean(without).

    geo_feats_*: part -> (N, C, h, w) geometry latents; codes_*: part -> (N, A) appearance
    codes. Returns part -> {'geometry': (C, h, w), 'appearance': (A,)}.

    With `normalise` (default) each vector is rescaled to the mean norm of that part's latents
    (codes) over both sets: alpha is then the step as a fraction of a typical latent's norm,
    comparable across parts whose latents differ in size and scale (like DFI's alpha on
    unit-norm features). This discards how strongly a part reacts to the attribute, so edit
    only the parts (and spaces) the attribute changes (`apply_learned_dfi(parts=, spaces=)`);
    `normalise=False` keeps the raw mean difference (alpha = 1: move by the full mean shift).
    """
    parts = set(geo_feats_with)
    if not (parts == set(geo_feats_without) == set(codes_with) == set(codes_without)):
        raise ValueError("all four inputs must have the same parts")
    vectors: dict[str, dict[str, Tensor]] = {}
    for part in geo_feats_with:
        entry: dict[str, Tensor] = {}
        for space, with_, without, ndim in (
            ("geometry", geo_feats_with[part], geo_feats_without[part], 4),
            ("appearance", codes_with[part], codes_without[part], 2),
        ):
            if with_.ndim != ndim or without.ndim != ndim or with_.shape[1:] != without.shape[1:]:
                raise ValueError(f"{part} {space}: shapes {tuple(with_.shape)} vs {tuple(without.shape)}")
            if with_.shape[0] == 0 or without.shape[0] == 0:
                raise ValueError(f"{part} {space}: empty set")
            d = with_.mean(0) - without.mean(0)
            if normalise:
                scale = _mean_norm(torch.cat([with_, without]))
                d = d / d.norm().clamp_min(1e-12) * scale
            entry[space] = d
        vectors[part] = entry
    return vectors


def apply_learned_dfi(
    z: Mapping[str, Tensor],
    codes: Mapping[str, Tensor],
    vectors: Mapping[str, Mapping[str, Tensor]],
    alpha: float | Mapping[str, float],
    parts: Sequence[str] | None = None,
    spaces: Sequence[str] = SPACES,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """z' = z + alpha * v_geometry, code' = code + alpha * v_appearance for the edited parts.

    z: part -> (B, C, h, w) latents; codes: part -> (B, A). `parts` defaults to the keys of
    an alpha dict, else every part in `vectors`; `spaces` limits the edit to geometry and/or
    appearance. Pure: inputs are not modified; unedited entries are passed through as-is.
    """
    unknown_spaces = set(spaces) - set(SPACES)
    if unknown_spaces:
        raise ValueError(f"unknown spaces {sorted(unknown_spaces)}; choose from {SPACES}")
    if parts is None:
        parts = list(alpha) if isinstance(alpha, Mapping) else list(vectors)
    z_out, codes_out = dict(z), dict(codes)
    for part in parts:
        a = alpha[part] if isinstance(alpha, Mapping) else alpha
        for space, source, out, ndim in (("geometry", z, z_out, 4), ("appearance", codes, codes_out, 2)):
            if space not in spaces:
                continue
            v = vectors[part][space]
            x = source[part]
            if x.ndim != ndim or x.shape[1:] != v.shape:
                raise ValueError(f"{part} {space}: input {tuple(x.shape)} vs vector {tuple(v.shape)}")
            out[part] = x + a * v.to(device=x.device, dtype=x.dtype)
    return z_out, codes_out
