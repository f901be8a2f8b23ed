"""Hand-drawn-style sketches of aligned faces (DESIGN.md §2 "Sketch synthesis").

Edge detectors trace texture (pores, stubble, hair strands) as many short fragments; a person
draws a few long, smooth strokes on the contours that matter. We get there classically:

1. On the device (batched torch + kornia): flow-guided difference of Gaussians (FDoG): a 1D
   DoG across the local edge direction from the structure tensor, then smoothing along the
   edge-tangent streamlines, so lines are coherent and texture is averaged away.
2. Per face on the CPU: threshold, thin to a skeleton, drop short fragments and spurs, trace
   the skeleton to polylines, smooth them, and re-render with anti-aliased strokes whose width
   follows the edge strength and tapers at the ends (pen pressure).
3. Facial features (eyes, brows, nose, lips, jaw) are drawn from the 68 iBUG landmarks as
   smooth splines; FDoG ink there is removed so features are drawn once, cleanly.

Style knobs live in `SketchStyle`; `randomize` > 0 perturbs them per face (width, jitter,
dropout, detail threshold) so encoders trained on these sketches generalise to real drawings.
Randomness comes only from per-face generators seeded by (seed, index): results do not depend
on batch size or device batching.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.io import release
from pipeline.core.parallel import available_cores, process_pool
from pipeline.core.progress import make_progress
from pipeline.data.sketch.draw import REF_RES, SketchStyle, draw_faces, face_rng, sample_style, sketch_one, sketch_workers

__all__ = ["REF_RES", "SketchStyle", "face_rng", "fdog_response", "sample_style", "sketch_one", "synthesize_sketches"]

# What pool workers import before forking (pipeline.core.parallel.process_pool): on CPU they run
# the whole recipe, torch included; on a GPU they only draw, and the import costs nothing extra.
POOL_PRELOAD = ("pipeline.data.sketch.synthesis",)

# ----------------------------------------------------------------------------- device part


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    ks = 2 * int(np.ceil(3 * sigma)) + 1
    return kornia.filters.gaussian_blur2d(x, (ks, ks), (sigma, sigma), border_type="replicate")


def _quantile_rows(x: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile(x, q, dim=1) (linear interpolation) from the few order statistics it
    needs (torch.topk on the nearer tail) instead of a full sort: the same values, several
    times faster on CPU."""
    n = x.shape[1]
    pos = q * (n - 1)
    k = int(pos)  # the result lies between the (k)th and (k+1)th smallest, counting from 0
    if k + 2 <= n - k:  # low quantile: the k+2 smallest, ascending
        low = torch.topk(x, min(n, k + 2), dim=1, largest=False).values
        a, b = low[:, k], low[:, min(k + 1, n - 1)]
    else:  # high quantile: the n-k largest, descending; ascending rank r sits at n-1-r
        high = torch.topk(x, n - k, dim=1).values
        a, b = high[:, n - k - 1], high[:, max(n - k - 2, 0)]
    return a if pos == k else a + (pos - k) * (b - a)


def _normalised_gray(images: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) float [0,1] -> (N,1,H,W) luminance stretched to its 1-99% range per face.

    Exposure differs between photos; stretching makes one threshold mean the same contrast.
    """
    gray = kornia.color.rgb_to_grayscale(images)
    flat = gray.flatten(1)
    lo = _quantile_rows(flat, 0.01).view(-1, 1, 1, 1)
    hi = _quantile_rows(flat, 0.99).view(-1, 1, 1, 1)
    return ((gray - lo) / (hi - lo).clamp_min(1e-3)).clamp(0, 1)


def _sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sample x (N,C,H,W) at normalised positions grid (N,H,W,2) in (x,y), border clamped."""
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _taps(extent: float, sigma: float) -> tuple[np.ndarray, float]:
    """Sample offsets covering ±extent with a step that grows with sigma, so the number of
    taps (and the cost per pixel) stays about the same at every resolution."""
    step = max(1.0, sigma / 1.5)
    n = int(np.ceil(extent / step))
    return np.arange(-n, n + 1, dtype=np.float64) * step, step


def fdog_response(
    images: torch.Tensor, sigma: float, k: float, tau: float, flow_sigma: float, tensor_sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow-guided DoG of (N,3,H,W) float [0,1] images -> (response, normalised gray), both
    (N,1,H,W); lines are where the response is < 0. Sizes are in pixels of the given images.
    """
    assert images.ndim == 4 and images.shape[1] == 3, images.shape
    n, _, h, w = images.shape
    gray = _normalised_gray(images)

    # Edge direction field from the smoothed structure tensor. Stored as the double angle
    # (cos 2θ, sin 2θ) so it can be interpolated without the ±direction ambiguity.
    grad = kornia.filters.spatial_gradient(_gauss_blur(gray, 0.5 * sigma), normalized=True)
    gx, gy = grad[:, :, 0], grad[:, :, 1]
    tensor = _gauss_blur(torch.cat((gx * gx, gx * gy, gy * gy), 1), tensor_sigma)
    e, f, g = tensor[:, 0:1], tensor[:, 1:2], tensor[:, 2:3]
    double = torch.cat((e - g, 2 * f), 1)
    double = double * torch.rsqrt((double * double).sum(1, keepdim=True).clamp_min(1e-24))
    theta = 0.5 * torch.atan2(double[:, 1], double[:, 0])  # gradient angle, (N,H,W)

    # Everything below works in grid_sample's normalised coordinates; `px` converts a pixel
    # displacement (dx, dy) into them.
    px = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], device=images.device, dtype=images.dtype)
    normal = torch.stack((torch.cos(theta), torch.sin(theta)), -1) * px  # (N,H,W,2)
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype),
        torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype),
        indexing="ij",
    )
    base = torch.stack((xs, ys), -1).expand(n, h, w, 2)

    # 1D DoG across the edge (along the gradient direction).
    offsets, _ = _taps(3 * k * sigma, sigma)
    g1 = np.exp(-(offsets**2) / (2 * sigma**2))
    g2 = np.exp(-(offsets**2) / (2 * (k * sigma) ** 2))
    weights = g1 / g1.sum() - tau * g2 / g2.sum()
    dog = torch.zeros_like(gray)
    for t, wgt in zip(offsets, weights):
        dog = dog + float(wgt) * _sample(gray, base + float(t) * normal)

    # Smooth along the tangent streamlines (forward and backward), following the interpolated
    # direction field and keeping the heading consistent at each step.
    offsets, step = _taps(2 * flow_sigma, 0.5 * flow_sigma)
    n_steps = int(offsets[-1] / step)
    sx, sy = step * 2.0 / (w - 1), step * 2.0 / (h - 1)  # one step of one pixel, normalised
    acc = dog.clone()
    total = 1.0
    for sign in (1.0, -1.0):
        pos = base
        hx, hy = -sign * torch.sin(theta), sign * torch.cos(theta)  # heading, unit vector in pixels
        for i in range(1, n_steps + 1):
            pos = pos + torch.stack((hx * sx, hy * sy), -1)
            wgt = float(np.exp(-((i * step) ** 2) / (2 * flow_sigma**2)))
            acc = acc + wgt * _sample(dog, pos)
            total += wgt
            if i == n_steps:
                break
            # Tangent at the new position: perpendicular to the half angle of the interpolated
            # double angle (c, s), by half-angle formulas (cheaper than atan2, sin and cos).
            c, s_ = _sample(double, pos).unbind(1)
            c = c * torch.rsqrt((c * c + s_ * s_).clamp_min(1e-24))
            cos_t = torch.sqrt(((1 + c) * 0.5).clamp_min(0))
            sin_t = torch.sqrt(((1 - c) * 0.5).clamp_min(0)).copysign(s_)
            flip = torch.where(cos_t * hy - sin_t * hx < 0, -1.0, 1.0)  # keep going the same way
            hx, hy = -sin_t * flip, cos_t * flip
    return acc / total, gray


def synthesize_sketches(
    images: np.ndarray,
    landmarks: np.ndarray,
    style: SketchStyle,
    seed: int,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    workers: int | None = 1,
    pool: Executor | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Hand-drawn-style sketches: images (N,R,R,3) uint8 RGB, landmarks (N,68,2) float32 (x,y)
    in the same pixel frame -> (N,R,R) uint8, black strokes (0) on white (255).

    Batches go to `pool` (a pipeline.core.parallel.process_pool, for callers that sketch several
    sets) or else to `workers` processes (None: $DFE_WORKERS or all cores; 1: all in this
    process). On a GPU the responses are computed here, batch by batch, and the workers draw;
    on the CPU each worker runs the whole recipe on one core. The output does not depend on
    batch_size, workers or pool. `out`: an (N,R,R) uint8 array to fill (a memory map, so a
    large set never has to fit in memory) and return.
    """
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise ValueError(f"images must be (N,R,R,3) uint8, got {images.shape} {images.dtype}")
    n, res = images.shape[0], images.shape[1]
    if landmarks.shape != (n, 68, 2):
        raise ValueError(f"landmarks must be ({n},68,2), got {landmarks.shape}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if out is None:
        out = np.empty((n, res, res), np.uint8)
    elif out.shape != (n, res, res) or out.dtype != np.uint8:
        raise ValueError(f"out must be ({n},{res},{res}) uint8, got {out.shape} {out.dtype}")
    on_cpu = torch.device(device).type == "cpu"
    n_workers = sketch_workers(workers, n, res, batch_size) if pool is None else 1
    with process_pool(n_workers, POOL_PRELOAD) as own_pool, make_progress() as progress:
        pool = pool or own_pool
        task = progress.add_task("sketch: drawing faces", total=n)
        batches = [(start, min(n, start + batch_size)) for start in range(0, n, batch_size)]
        if pool is None:
            # A helper thread computes the next batch's responses while this one draws: torch
            # releases the GIL, so FDoG (or the device) and the Python drawing overlap.
            batches = overlap_batches(n, batch_size)
            with ThreadPoolExecutor(1) as helper, torch_threads(fdog_threads(res)):
                def respond(a: int, b: int) -> Future:
                    return helper.submit(fdog_batch, images[a:b], landmarks[a:b], style, device)

                pending = respond(*batches[0]) if batches else None
                for i, (start, stop) in enumerate(batches):
                    current = pending.result()
                    pending = respond(*batches[i + 1]) if i + 1 < len(batches) else None
                    out[start:stop] = draw_faces(*current, style, seed, start)
                    release(images, out)  # memory maps stay a batch deep, whatever the set's size
                    progress.advance(task, stop - start)
            return out
        # At most two batches a core in flight: inputs and responses of a large set never
        # pile up in memory ahead of the workers.
        todo, running = iter(batches), {}
        while True:
            while len(running) < 2 * available_cores() and (batch := next(todo, None)) is not None:
                a, b = batch
                if on_cpu:  # each worker runs the whole recipe on its own core; this process waits
                    job = pool.submit(sketch_batch, np.array(images[a:b]), np.asarray(landmarks[a:b]), style, seed, a,
                                      "cpu", True)
                else:  # the device computes the responses batch by batch; the workers draw meanwhile
                    job = pool.submit(draw_faces, *fdog_batch(images[a:b], landmarks[a:b], style, device), style, seed, a)
                running[job] = batch
            if not running:
                return out
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for job in done:
                a, b = running.pop(job)
                out[a:b] = job.result()
                release(images, out)
                progress.advance(task, b - a)


def overlap_batches(n: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) batches of `size` faces for the helper-thread overlap, with the first and
    last `size` faces in quarter batches: the first responses have no drawing to overlap
    with, nor the last drawing any responses, so those waits are kept short."""
    small = max(1, size // 4)
    tail = max(size, n - size)
    cuts = [*range(0, min(n, size), small), *range(size, tail, size), *range(tail, n, small), n]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if a < b]


def fdog_threads(res: int) -> int:
    """torch threads for FDoG on the helper thread while this one draws. Below 256 px FDoG
    and the drawing take about as long, so FDoG leaves the drawing a core; from 256 px up FDoG
    grows with the area and the drawing only with the outline, so FDoG takes every core. On
    2 cores (python -m benchmarks.sketch --workers 1 --fdog-threads 1|2, interleaved runs),
    one FDoG thread vs two: 128 px, 204 faces: 1.53 vs 1.88 s (best of 3); 256 px, 64 faces
    (--batch-size 8): even (2.7-3.2 vs 2.4-3.3 s); 512 px, 24 faces (--batch-size 4): 5.5 vs
    3.8-4.9 s."""
    cores = torch.get_num_threads()
    return max(1, cores - 1) if res < 256 else cores


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's CPU threads set to n within the block, then put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fdog_batch(
    images: np.ndarray, landmarks: np.ndarray, style: SketchStyle, device: str | torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B,R,R,3) uint8 faces -> FDoG responses and normalised grays (B,R,R) float32 on the
    CPU, with the landmarks as float64: the inputs of draw_faces."""
    px = images.shape[1] / REF_RES
    batch = torch.from_numpy(np.array(images)).to(device)  # copy: input may be a read-only memmap
    batch = batch.permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        resp, gray = fdog_response(batch, style.sigma * px, style.k, style.tau,
                                   style.flow_sigma * px, style.tensor_sigma * px)
    return resp[:, 0].cpu().numpy(), gray[:, 0].cpu().numpy(), np.asarray(landmarks, np.float64)


def sketch_batch(
    images: np.ndarray, landmarks: np.ndarray, style: SketchStyle, seed: int, first_index: int,
    device: str | torch.device = "cpu", single_thread: bool = False,
) -> np.ndarray:
    """Sketches of faces first_index, first_index+1, ...: the whole recipe for one batch.
    A CPU pool worker's unit of work (single_thread: one core per worker)."""
    if single_thread:
        torch.set_num_threads(1)
    return draw_faces(*fdog_batch(images, landmarks, style, device), style, seed, first_index)
