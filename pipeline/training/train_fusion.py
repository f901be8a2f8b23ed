"""Stage 4, `train_fusion`: global fusion of the part features, every local module frozen."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import PARTS
from pipeline.core.profiles import part_boxes
from pipeline.data.augment import Augmenter
from pipeline.data.loader import ComponentData
from pipeline.models.editor import load_part_modules, require_weights
from pipeline.training.common import TaskBase, check_config, data_inputs, optimizer_step, sample_grid, split_features
from pipeline.training.loop import TrainConfig, Trainer, TrainResult


class FusionTask(TaskBase):
    stage = "fusion"

    def __init__(self, trainer: Trainer) -> None:
        from pipeline.models import losses as L
        from pipeline.models import networks as N

        super().__init__(trainer, PARTS, sketches=False)
        self.boxes = part_boxes(self.profile.resolution)
        self.locals = {
            p: load_part_modules(self.cfg.models_dir, p, self.profile, self.device,
                                 which=("image_encoder", "generator"))
            for p in PARTS
        }
        self.fusion = N.GlobalFusion(self.profile).to(self.device)
        self.disc = N.MultiScaleDiscriminator(self.profile).to(self.device)
        self.fusion_t, self.disc_t = trainer.wrap(self.fusion), trainer.wrap(self.disc)
        self.perceptual = L.PerceptualLoss(device=self.device)
        self.aug = Augmenter(self.cfg.augment, "bg", self.profile.resolution).to(self.device)
        self.modules = {"fusion": self.fusion, "discriminator": self.disc}
        self.optimizers = {
            "fusion": trainer.adam(self.fusion),
            "discriminator": trainer.adam(self.disc, lr=self.cfg.lr_d),
        }

    def _photos(self, data: ComponentData, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {p: data.photos(p, idx) for p in PARTS}

    @torch.no_grad()
    def _canvas(self, photos: dict[str, torch.Tensor]) -> torch.Tensor:
        from pipeline.models.networks import fuse_canvas

        feats = {}
        for p, x in photos.items():
            m = self.locals[p]
            _, feats[p] = m["generator"](m["image_encoder"](x), x)
        return fuse_canvas(feats, self.boxes)

    def next_batch(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Part inputs and the whole-face target. PhotoShift acts on the whole face (a side light
        spans it) and the part inputs are cut from the shifted face, as in the components stage."""
        photos = self.aug.faces(self._photos(self.data, self.sampler.batch()))
        if not self.aug.cfg.shifts:
            return photos, photos["bg"]
        face, target = self.aug.shifted(photos["bg"])
        return {p: face if p == "bg" else face[..., y:y + s, x:x + s] for p, (x, y, s) in self.boxes.items()}, target

    def train_step(self, batch: tuple[dict[str, torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        from pipeline.models import losses as L

        photos, target = batch
        B = target.shape[0]
        with self.trainer.autocast():
            canvas = self._canvas(photos)
            out = self.fusion_t(canvas)
            assert out.shape == target.shape, (out.shape, target.shape)
            if self.adversarial:
                self.disc.requires_grad_(False)
                real_f, fake_f = split_features(self.disc(torch.cat([target, out])), [B, B])
        out32 = out.float()
        terms = {"l1": L.l1(out32, target), "perc": self.perceptual(out32, target).float()}
        if self.adversarial:
            terms["fm"] = L.feature_matching_loss(real_f, fake_f)
            terms["gan"] = L.lsgan_g_loss(fake_f)
        g_total = sum(self.w[k] * v for k, v in terms.items())
        optimizer_step(self.optimizers["fusion"], g_total)
        losses = {**{k: v.detach() for k, v in terms.items()}, "g_total": g_total.detach()}
        if self.adversarial:
            self.disc.requires_grad_(True)
            with self.trainer.autocast():
                d_real, d_fake = split_features(self.disc_t(torch.cat([target, out.detach()])), [B, B])
            d_loss = L.lsgan_d_loss(d_real, d_fake)
            optimizer_step(self.optimizers["discriminator"], d_loss)
            losses["d"] = d_loss.detach()
        return losses

    def validation_losses(self) -> dict[str, torch.Tensor]:
        from pipeline.models import losses as L

        photos = self._photos(self.shown, self.val_idx)
        return {"l1": L.l1(self.fusion(self._canvas(photos)).float(), photos["bg"])}

    def sample_grid(self) -> np.ndarray:
        photos = self._photos(self.shown, self.shown_idx)
        m = self.locals["bg"]
        bg_local, _ = m["generator"](m["image_encoder"](photos["bg"]), photos["bg"])
        return sample_grid([photos["bg"], bg_local, self.fusion(self._canvas(photos))], ["photo", "bg part", "fused"])

    def export(self) -> dict[str, nn.Module]:
        return {"fusion": self.fusion}

    def summary(self) -> dict[str, Any]:
        return {"perceptual_available": bool(self.perceptual.available),
                "perceptual_reason": self.perceptual.reason}


def train_fusion(cfg: TrainConfig) -> TrainResult:
    check_config(cfg, "fusion", "fusion")
    upstream = [require_weights(s, p, cfg.models_dir) for p in PARTS for s in ("image_encoder", "local")]
    trainer = Trainer(cfg, inputs=data_inputs(cfg, PARTS, sketches=False) + upstream)
    return trainer.fit(FusionTask(trainer))
