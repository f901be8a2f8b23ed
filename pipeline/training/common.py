"""The four DeepFaceEditing training stages (DESIGN.md §4) and the loaders for their outputs.

1. `train_sketch_ae(part, cfg)`: E_sketch + D_sketch, L1 sketch reconstruction.
2. `train_image_encoder(part, cfg)`: E_image into the frozen sketch latent; L1 over the
   frozen decoder's 7 activations, photo path vs sketch path.
3. `train_local(part, cfg)`: appearance encoder + part generator; geometry from the frozen
   E_image. Frozen, because the sketch editing path at inference feeds E_sketch latents to the
   same generator: stage 2 aligned E_image with that space, and fine-tuning E_image here would
   let the generator drift to an image-only latent that sketches no longer reach.
   Losses: self-reconstruction (Lab L1, discriminator feature matching, VGG perceptual when
   the weights exist), swap geometry (E_image(G(z1, I2)) = z1), cycle (G(z2, I') ~ I2) and
   multi-scale LSGAN on reconstructions and swaps.
4. `train_fusion(cfg)`: every local module frozen; part features (PartGenerator.decode)
   pasted onto the bg feature canvas, GlobalFusion renders the face; LSGAN + feature
   matching + perceptual + L1 against the photo, self-reconstruction only.

Outputs per stage: `models/<stage>/<part>.safetensors` (+ `.json` resolved config),
`checkpoints/<stage>/<part>.pt` (resume), `dvclive/<stage>/<part>/` (fusion: `<stage>/fusion`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import PARTS
from pipeline.data.loader import ComponentData, IndexSampler
from pipeline.core.profiles import get_profile, part_boxes
from pipeline.training.loop import TrainConfig, Trainer

# Loss weights per stage; params.yaml `train_<stage>.loss_weights` overrides any of them.
DEFAULT_LOSS_WEIGHTS: dict[str, dict[str, float]] = {
    # contour: plain landmark line drawings decode to the face's full sketch and encode to its
    # latent (data.sketch.contours), so drawings unlike our synthesis still drive geometry.
    "sketch_ae": {"l1": 1.0, "contour": 1.0},
    "image_encoder": {"act": 1.0},
    "local": {"rec": 10.0, "fm": 10.0, "perc": 10.0, "gan": 1.0, "geo": 10.0, "cycle": 10.0},
    "fusion": {"l1": 10.0, "fm": 10.0, "perc": 10.0, "gan": 1.0},
}

N_SAMPLES = 4  # faces in the dvclive sample grids
N_VAL = 16  # val faces behind the logged validation loss


# ---------------------------------------------------------------------------------------------
# Shared task plumbing
# ---------------------------------------------------------------------------------------------


class TaskBase:
    """Data, sampler and sample faces shared by the four tasks."""

    stage: str

    def __init__(self, trainer: Trainer, parts: tuple[str, ...], sketches: bool) -> None:
        self.trainer = trainer
        self.cfg = trainer.cfg
        self.profile = get_profile(self.cfg.profile)
        self.device = trainer.device
        self.w = {**DEFAULT_LOSS_WEIGHTS[self.stage], **self.cfg.loss_weights}
        unknown = set(self.cfg.loss_weights) - set(DEFAULT_LOSS_WEIGHTS[self.stage])
        if unknown:
            raise ValueError(f"unknown loss weights for {self.stage}: {sorted(unknown)}")
        # gan and fm both 0: no discriminator is run or trained (a plain reconstruction objective)
        self.adversarial = self.w.get("gan", 0.0) > 0 or self.w.get("fm", 0.0) > 0
        self.data = ComponentData(self.cfg.components, "train", parts, self.device, load_sketches=sketches)
        expected = part_boxes(self.profile.resolution)
        for p in parts:
            if self.data.size(p) != expected[p][2]:
                raise ValueError(
                    f"{p} crops are {self.data.size(p)} px but profile {self.profile.name!r} wants "
                    f"{expected[p][2]}: rebuild data/components with the same profile"
                )
        # Sample grids and the validation loss use held-out faces: the val split (never test,
        # which is only reported); data made before val existed falls back to the train faces.
        has_val = (Path(self.cfg.components) / "val" / "manifest.csv").exists()
        self.shown = ComponentData(self.cfg.components, "val", parts, self.device, load_sketches=sketches) \
            if has_val else self.data
        self.shown_idx = torch.arange(min(N_SAMPLES, len(self.shown)))
        self.val_idx = torch.arange(min(N_VAL, len(self.shown)))  # fixed faces: a comparable curve
        # cfg.batch_size is the global batch: each rank trains on its slice (see IndexSampler).
        self.sampler = IndexSampler(len(self.data), self.cfg.batch_size, self.cfg.seed, trainer.dist.rank,
                                    trainer.dist.world_size,
                                    groups=self.data.manifest["identity"].astype(str).to_numpy())

    def summary(self) -> dict[str, Any]:
        return {}

    def validation_losses(self) -> dict[str, torch.Tensor]:
        """The stage's reconstruction losses on `val_idx` (held-out people, no augmentation)."""
        return {}


def sample_grid(rows: list[torch.Tensor], labels: list[str]) -> np.ndarray:
    """Columns = sample faces, rows = kinds (input, reconstruction, ...)."""
    from pipeline.core.viz import make_grid, to_uint8

    n = rows[0].shape[0]
    tiles = [im for row in rows for im in to_uint8(row.float().clamp(-1, 1))]
    return make_grid(tiles, nrow=n, row_labels=labels)


def split_features(feats: list[list[torch.Tensor]], sizes: list[int]) -> list[list[list[torch.Tensor]]]:
    """Split every discriminator feature along the batch: one feature pyramid per chunk."""
    per_scale = [[f.split(sizes) for f in scale] for scale in feats]
    return [[[f[i] for f in scale] for scale in per_scale] for i in range(len(sizes))]


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# ---------------------------------------------------------------------------------------------
# Stage 1: sketch autoencoder
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Stage 2: image encoder into the sketch latent
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Stage 3: local disentanglement
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Stage 4: global fusion
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def check_config(cfg: TrainConfig, stage: str, part: str) -> None:
    if cfg.stage != stage or cfg.part != part:
        raise ValueError(f"config is for {cfg.stage}/{cfg.part}, called as {stage}/{part}")
    if part != "fusion" and part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose one of {PARTS}")


def data_inputs(cfg: TrainConfig, parts: tuple[str, ...], sketches: bool) -> list[Path]:
    d = Path(cfg.components) / "train"
    files = [d / "manifest.csv"]
    for p in parts:
        files.append(d / f"{p}_photo.npy")
        if sketches:
            files.append(d / f"{p}_sketch.npy")
    return [f for f in files if f.exists()]  # missing files get ComponentData's clear error


