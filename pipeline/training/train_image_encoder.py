"""Stage 2, `train_image_encoder`: E_image into the frozen sketch latent; L1 over the frozen
decoder's 7 activations, photo path vs sketch path."""

from __future__ import annotations


import numpy as np
import torch
from torch import nn

from pipeline.data.augment import Augmenter
from pipeline.models.editor import load_part_modules, require_weights
from pipeline.training.common import TaskBase, check_config, data_inputs, optimizer_step, sample_grid
from pipeline.training.loop import TrainConfig, Trainer, TrainResult


class ImageEncoderTask(TaskBase):
    stage = "image_encoder"

    def __init__(self, trainer: Trainer, part: str) -> None:
        from pipeline.models import networks as N

        super().__init__(trainer, (part,), sketches=True)
        self.part = part
        frozen = load_part_modules(self.cfg.models_dir, part, self.profile, self.device,
                                   which=("sketch_encoder", "sketch_decoder"))
        self.sketch_encoder, self.sketch_decoder = frozen["sketch_encoder"], frozen["sketch_decoder"]
        self.encoder = N.image_encoder(self.profile).to(self.device)
        self.encoder_t = trainer.wrap(self.encoder)
        self.aug = Augmenter(self.cfg.augment, part, self.profile.resolution).to(self.device)
        self.modules = {"image_encoder": self.encoder}
        self.optimizers = {"image_encoder": trainer.adam(self.encoder)}

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.batch()
        return self.aug.pair(self.data.photos(self.part, idx), self.data.sketches(self.part, idx))

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        from pipeline.models import losses as L

        photo, sketch = batch
        with self.trainer.autocast():
            with torch.no_grad():
                _, target = self.sketch_decoder(self.sketch_encoder(sketch), return_activations=True)
            _, acts = self.sketch_decoder(self.encoder_t(photo), return_activations=True)
        assert len(acts) == len(target) == 7, "the decoder must expose its 7 activations"
        loss = L.activation_l1([a.float() for a in acts], [t.float() for t in target])
        optimizer_step(self.optimizers["image_encoder"], self.w["act"] * loss)
        return {"act": loss.detach()}

    def validation_losses(self) -> dict[str, torch.Tensor]:
        from pipeline.models import losses as L

        photo, sketch = self.shown.photos(self.part, self.val_idx), self.shown.sketches(self.part, self.val_idx)
        _, target = self.sketch_decoder(self.sketch_encoder(sketch), return_activations=True)
        _, acts = self.sketch_decoder(self.encoder(photo), return_activations=True)
        return {"act": L.activation_l1([a.float() for a in acts], [t.float() for t in target])}

    def sample_grid(self) -> np.ndarray:
        photo = self.shown.photos(self.part, self.shown_idx)
        sketch = self.shown.sketches(self.part, self.shown_idx)
        from_photo = self.sketch_decoder(self.encoder(photo))
        from_sketch = self.sketch_decoder(self.sketch_encoder(sketch))
        return sample_grid([photo, sketch, from_photo, from_sketch], ["photo", "sketch", "D(Eimg)", "D(Esk)"])

    def export(self) -> dict[str, nn.Module]:
        return self.modules


def train_image_encoder(part: str, cfg: TrainConfig) -> TrainResult:
    check_config(cfg, "image_encoder", part)
    upstream = [require_weights("sketch_ae", part, cfg.models_dir)]
    trainer = Trainer(cfg, inputs=data_inputs(cfg, (part,), sketches=True) + upstream)
    return trainer.fit(ImageEncoderTask(trainer, part))


