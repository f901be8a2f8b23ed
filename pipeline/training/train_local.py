"""Stage 3, `train_local`: appearance encoder + part generator per part, geometry from the
frozen E_image (see pipeline.training.common for why frozen)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.data.augment import Augmenter
from pipeline.models.editor import init_appearance_encoder, load_part_modules, require_weights
from pipeline.training.common import TaskBase, check_config, data_inputs, optimizer_step, sample_grid, split_features
from pipeline.training.loop import TrainConfig, Trainer, TrainResult


class LocalTask(TaskBase):
    stage = "local"

    def __init__(self, trainer: Trainer, part: str) -> None:
        from pipeline.models import losses as L
        from pipeline.models import networks as N

        super().__init__(trainer, (part,), sketches=False)
        self.part = part
        self.geometry = load_part_modules(self.cfg.models_dir, part, self.profile, self.device,
                                          which=("image_encoder",))["image_encoder"]
        self.generator = N.PartGenerator(self.profile).to(self.device)
        init_appearance_encoder(self.generator)
        self.disc = N.MultiScaleDiscriminator(self.profile).to(self.device)
        self.generator_t, self.disc_t = trainer.wrap(self.generator), trainer.wrap(self.disc)
        self.perceptual = L.PerceptualLoss(device=self.device)
        self.aug = Augmenter(self.cfg.augment, part, self.profile.resolution).to(self.device)
        self.modules = {"generator": self.generator, "discriminator": self.disc}
        self.optimizers = {
            "generator": trainer.adam(self.generator),
            "discriminator": trainer.adam(self.disc, lr=self.cfg.lr_d),
        }

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs x1, x2 (two different people) and their targets t1, t2: the same light, no camera degradation."""
        a, b = self.sampler.pairs()
        (x1, t1), (x2, t2) = self.aug.photo(self.data.photos(self.part, a)), self.aug.photo(self.data.photos(self.part, b))
        return x1, x2, t1, t2

    def train_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        from pipeline.models import losses as L

        x1, x2, t1, t2 = batch
        B = x1.shape[0]
        with self.trainer.autocast():
            with torch.no_grad():
                z1, z2 = self.geometry(torch.cat([x1, x2])).chunk(2)
            rec, _ = self.generator_t(z1, x1)  # self-reconstruction: I1 == I2
            swap, _ = self.generator_t(z1, x2)  # geometry of x1, appearance of x2
            cyc, _ = self.generator_t(z2, swap)  # back to x2: appearance must survive the swap
            geo = L.l1(self.geometry(swap).float(), z1.float())
            if self.adversarial:
                # Generator side of the GAN: the discriminator is a fixed loss here (raw module, no
                # grads for its weights, so DDP's reducer never sees it).
                self.disc.requires_grad_(False)
                real_f, rec_f, swap_f = split_features(self.disc(torch.cat([t1, rec, swap])), [B, B, B])
        rec, swap, cyc = rec.float(), swap.float(), cyc.float()
        terms = {
            "rec": L.rgb_to_lab_l1(rec, t1),
            "perc": self.perceptual(rec, t1).float(),
            "geo": geo,
            "cycle": L.rgb_to_lab_l1(cyc, t2),
        }
        if self.adversarial:
            terms["fm"] = L.feature_matching_loss(real_f, rec_f)
            terms["gan"] = 0.5 * (L.lsgan_g_loss(rec_f) + L.lsgan_g_loss(swap_f))
        g_total = sum(self.w[k] * v for k, v in terms.items())
        optimizer_step(self.optimizers["generator"], g_total)
        losses = {**{k: v.detach() for k, v in terms.items()}, "g_total": g_total.detach()}
        if self.adversarial:
            self.disc.requires_grad_(True)
            with self.trainer.autocast():
                feats = self.disc_t(torch.cat([t1, t2, rec.detach(), swap.detach()]))
            d_real, d_fake = split_features(feats, [2 * B, 2 * B])
            d_loss = L.lsgan_d_loss(d_real, d_fake)
            optimizer_step(self.optimizers["discriminator"], d_loss)
            losses["d"] = d_loss.detach()
        return losses

    def validation_losses(self) -> dict[str, torch.Tensor]:
        from pipeline.models import losses as L

        x1 = self.shown.photos(self.part, self.val_idx)
        x2 = x1.roll(1, dims=0)  # val faces are two per person: roll(1) pairs mostly differ
        z1, z2 = self.geometry(x1), self.geometry(x2)
        rec, _ = self.generator(z1, x1)
        swap, _ = self.generator(z1, x2)
        cyc, _ = self.generator(z2, swap)
        return {"rec": L.rgb_to_lab_l1(rec.float(), x1), "geo": L.l1(self.geometry(swap).float(), z1.float()),
                "cycle": L.rgb_to_lab_l1(cyc.float(), x2)}

    def sample_grid(self) -> np.ndarray:
        x1 = self.shown.photos(self.part, self.shown_idx)
        x2 = x1.roll(1, dims=0)
        z1 = self.geometry(x1)
        rec, _ = self.generator(z1, x1)
        swap, _ = self.generator(z1, x2)
        return sample_grid([x1, rec, x2, swap], ["geometry", "recon", "appearance", "swap"])

    def export(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    def summary(self) -> dict[str, Any]:
        return {"perceptual_available": bool(self.perceptual.available),
                "perceptual_reason": self.perceptual.reason}


def train_local(part: str, cfg: TrainConfig) -> TrainResult:
    check_config(cfg, "local", part)
    upstream = [require_weights("image_encoder", part, cfg.models_dir)]
    trainer = Trainer(cfg, inputs=data_inputs(cfg, (part,), sketches=False) + upstream)
    return trainer.fit(LocalTask(trainer, part))


