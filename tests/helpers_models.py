"""Shared test helpers: a tiny trained models dir (micro profile, 128 px) built once per session,
and aligned London faces. The models are trained for one step on synthetic components: enough
for every inference path to run with the real file layout, not to produce good faces."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import PARTS

PROFILE = "micro"
_CACHE: dict[str, Path] = {}


def tiny_models(tmp_path_factory) -> Path:
    """models/<stage>/<part>.safetensors for all four stages (built on first call, then reused)."""
    if "models" in _CACHE:
        return _CACHE["models"]
    from pipeline.training.train_fusion import train_fusion
    from pipeline.training.train_image_encoder import train_image_encoder
    from pipeline.training.train_local import train_local
    from pipeline.training.train_sketch_ae import train_sketch_ae
    from pipeline.data.loader import synthetic_components
    from pipeline.training.loop import TrainConfig

    root = tmp_path_factory.mktemp("tiny_models")
    comps = synthetic_components(root / "components", 128, n_train=4, n_test=2, seed=0)
    with one_thread():
        def cfg(stage: str, part: str) -> TrainConfig:
            return TrainConfig(
                stage=stage, part=part, profile=PROFILE, steps=1, batch_size=2, lr=1e-3, log_every=1,
                ckpt_every=1, sample_every=1, progress=False, device="cpu", components=str(comps),
                models_dir=str(root / "models"), checkpoints_dir=str(root / "checkpoints"),
                live_root=str(root / "dvclive"),
            )

        for stage, fn in (("sketch_ae", train_sketch_ae), ("image_encoder", train_image_encoder),
                          ("local", train_local)):
            for part in PARTS:
                fn(part, cfg(stage, part))
        train_fusion(cfg("fusion", "fusion"))
    _CACHE["models"] = root / "models"
    return _CACHE["models"]


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny nets on a shared 2-core machine: one OpenMP thread runs them several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Import into a test module to run all of it with one torch thread (see one_thread)."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Import into a test module: the session's tiny models dir."""
    return tiny_models(tmp_path_factory)


def aligned_london(paths: list[Path], resolution: int, transforms: bool = False):
    """Aligned faces (N,R,R,3) uint8 and their aligned landmarks (N,68,2) from London photos
    (+ their photo -> aligned transforms (N,2,3) with `transforms`)."""
    from pipeline.editing.edit import FaceDetector, align_image, read_image

    det = FaceDetector(upsample=0, detect_side=512)
    faces = [align_image(read_image(p), resolution, det, str(p)) for p in paths]
    out = np.stack([f.face for f in faces]), np.stack([f.landmarks for f in faces]).astype(np.float32)
    return (*out, np.stack([f.transform for f in faces])) if transforms else out
