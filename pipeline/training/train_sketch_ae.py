"""Stage 1, `train_sketch_ae`: E_sketch + D_sketch per part, L1 sketch reconstruction."""

from __future__ import annotations


import numpy as np
import torch
from torch import nn

from pipeline.data.augment import Augmenter
from pipeline.training.common import TaskBase, check_config, data_inputs, optimizer_step, sample_grid
from pipeline.training.loop import TrainConfig, Trainer, TrainResult


class SketchAETask(TaskBase):
    stage = "sketch_ae"

    def __init__(self, trainer: Trainer, part: str) -> None:
        from pipeline.models import networks as N

        super().__init__(trainer, (part,), sketches=True)
        self.part = part
        self.encoder = N.sketch_encoder(self.profile).to(self.device)
        self.decoder = N.SketchDecoder(self.profile).to(self.device)
        self.encoder_t, self.decoder_t = trainer.wrap(self.encoder), trainer.wrap(self.decoder)
        self.aug = Augmenter(self.cfg.augment, part).to(self.device)
        self.modules = {"sketch_encoder": self.encoder, "sketch_decoder": self.decoder}
        self.optimizers = {"autoencoder": trainer.adam(self.encoder, self.decoder)}

    def next_batch(self) -> torch.Tensor:
        return self.aug.sketch(self.data.sketches(self.part, self.sampler.batch()))

    def train_step(self, sketch: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.trainer.autocast():
            rec = self.decoder_t(self.encoder_t(sketch))
        assert rec.shape == sketch.shape, (rec.shape, sketch.shape)
        from pipeline.models import losses as L

        loss = L.l1(rec.float(), sketch)
        optimizer_step(self.optimizers["autoencoder"], self.w["l1"] * loss)
        return {"l1": loss.detach()}

    def sample_grid(self) -> np.ndarray:
        s = self.shown.sketches(self.part, self.shown_idx)
        return sample_grid([s, self.decoder(self.encoder(s))], ["sketch", "recon"])

    def export(self) -> dict[str, nn.Module]:
        return self.modules


def train_sketch_ae(part: str, cfg: TrainConfig) -> TrainResult:
    check_config(cfg, "sketch_ae", part)
    trainer = Trainer(cfg, inputs=data_inputs(cfg, (part,), sketches=True))
    return trainer.fit(SketchAETask(trainer, part))


