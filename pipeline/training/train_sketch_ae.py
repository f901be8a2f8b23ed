"""Stage 1, `train_sketch_ae`: E_sketch + D_sketch per part, L1 sketch reconstruction.

People draw in other styles than our synthesis. With the `contour` loss weight (default 1)
each batch also carries the plain landmark line drawing of the same faces
(data.sketch.contours, drawn from data/aligned/landmarks.npy, same augmentation), whose
latent must match the full sketch's (stop-gradient) and whose decoding must be the full
sketch: a drawing of just the contours then lands where that face's sketch does.

With `freeze_encoder` only D_sketch trains, against the E_sketch already in
`models/sketch_ae/<part>.safetensors` (the authors' released one, which comes without a
decoder): the encoder is written back unchanged beside the new decoder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core.profiles import part_boxes
from pipeline.data.augment import Augmenter
from pipeline.training.common import TaskBase, check_config, data_inputs, optimizer_step, sample_grid
from pipeline.training.loop import TrainConfig, Trainer, TrainResult


class SketchAETask(TaskBase):
    stage = "sketch_ae"

    def __init__(self, trainer: Trainer, part: str, freeze_encoder: bool = False) -> None:
        from pipeline.models import networks as N

        super().__init__(trainer, (part,), sketches=True)
        self.part = part
        self.frozen_from: Path | None = None
        if freeze_encoder:
            self.frozen_from = frozen_encoder_path(self.cfg.models_dir, part)
            self.encoder = load_frozen_encoder(self.frozen_from, self.profile, self.device)
            self.encoder_digest = tensors_digest(self.encoder)
        else:
            self.encoder = N.sketch_encoder(self.profile).to(self.device)
        self.decoder = N.SketchDecoder(self.profile).to(self.device)
        # A frozen encoder has no gradients to average: it runs unwrapped, outside the optimiser
        # and the resume checkpoints (export writes its loaded tensors back as they were).
        self.encoder_t = self.encoder if freeze_encoder else trainer.wrap(self.encoder)
        self.decoder_t = trainer.wrap(self.decoder)
        self.aug = Augmenter(self.cfg.augment, part).to(self.device)
        self.box = part_boxes(self.profile.resolution)[part]
        self.contours = self.w["contour"] > 0 and not freeze_encoder
        self.train_lm = split_landmarks(self.cfg.aligned, self.data) if self.contours else None
        self.val_lm = split_landmarks(self.cfg.aligned, self.shown) if self.contours else None
        self.contours = self.train_lm is not None and self.val_lm is not None
        if freeze_encoder:
            self.modules = {"sketch_decoder": self.decoder}
            self.optimizers = {"decoder": trainer.adam(self.decoder)}
        else:
            self.modules = {"sketch_encoder": self.encoder, "sketch_decoder": self.decoder}
            self.optimizers = {"autoencoder": trainer.adam(self.encoder, self.decoder)}

    def _contours(self, landmarks: np.ndarray, idx: torch.Tensor) -> torch.Tensor:
        """(B,3,s,s) in [-1,1]: the part's crop of each face's landmark line drawing."""
        from pipeline.data.sketch.contours import contour_drawing

        x, y, s = self.box
        r = self.profile.resolution
        crops = np.stack([contour_drawing(landmarks[i], r)[y:y + s, x:x + s] for i in idx.tolist()])
        return torch.from_numpy(crops).to(self.device).float().div(127.5).sub(1.0)[:, None].expand(-1, 3, -1, -1)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self.sampler.batch()
        sketch = self.data.sketches(self.part, idx)
        if not self.contours:
            return self.aug.sketch(sketch), None
        # One geometric augmentation for both: stacked as channels of one "sketch".
        both = self.aug.sketch(torch.cat([sketch[:, :1], self._contours(self.train_lm, idx)[:, :1],
                                          sketch[:, :1]], dim=1))
        return both[:, :1].expand(-1, 3, -1, -1), both[:, 1:2].expand(-1, 3, -1, -1)

    def _losses(self, sketch: torch.Tensor, contour: torch.Tensor | None, encoder, decoder) -> dict[str, torch.Tensor]:
        from pipeline.models import losses as L

        B = sketch.shape[0]
        with self.trainer.autocast():
            x = sketch if contour is None else torch.cat([sketch, contour])
            with torch.set_grad_enabled(self.frozen_from is None and torch.is_grad_enabled()):
                z = encoder(x)
            rec = decoder(z)
        assert rec.shape == x.shape, (rec.shape, x.shape)
        rec = rec.float()
        terms = {"l1": L.l1(rec[:B], sketch)}
        if contour is not None:
            z = z.float()
            terms["contour"] = L.l1(rec[B:], sketch) + L.l1(z[B:], z[:B].detach())
        return terms

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        terms = self._losses(*batch, self.encoder_t, self.decoder_t)
        optimizer_step(next(iter(self.optimizers.values())), sum(self.w[k] * v for k, v in terms.items()))
        return {k: v.detach() for k, v in terms.items()}

    def validation_losses(self) -> dict[str, torch.Tensor]:
        s = self.shown.sketches(self.part, self.val_idx)
        c = self._contours(self.val_lm, self.val_idx) if self.contours else None
        return self._losses(s, c, self.encoder, self.decoder)

    def sample_grid(self) -> np.ndarray:
        s = self.shown.sketches(self.part, self.shown_idx)
        rows, labels = [s, self.decoder(self.encoder(s))], ["sketch", "recon"]
        if self.contours:
            c = self._contours(self.val_lm, self.shown_idx)
            rows, labels = rows + [c, self.decoder(self.encoder(c))], labels + ["contours", "D(E(contours))"]
        return sample_grid(rows, labels)

    def export(self) -> dict[str, nn.Module]:
        return {"sketch_encoder": self.encoder, "sketch_decoder": self.decoder}

    def summary(self) -> dict:
        out: dict = {"contour_drawings": bool(self.contours)}
        if self.frozen_from is not None:
            out["frozen_encoder"] = {"from": str(self.frozen_from), "sha256": self.encoder_digest}
        return out


def split_landmarks(aligned_dir: str | Path, data) -> np.ndarray | None:
    """(N,68,2) aligned-frame landmarks of a components split's faces (its `source_row`s in
    `aligned_dir/landmarks.npy`); None where either is missing (contour drawings are off)."""
    path = Path(aligned_dir) / "landmarks.npy"
    if not path.exists() or "source_row" not in data.manifest.columns:
        return None
    return np.asarray(np.load(path, mmap_mode="r")[data.manifest["source_row"].to_numpy()], np.float64)


def frozen_encoder_path(models_dir: str | Path, part: str) -> Path:
    from pipeline.models.editor import stage_weights

    path = stage_weights("sketch_ae", part, models_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} missing: --freeze-encoder trains a decoder for the sketch encoder already there, "
            f"e.g. the authors' (`dfe import-official DIR --out {models_dir}`)"
        )
    return path


def load_frozen_encoder(path: Path, profile, device: torch.device) -> nn.Module:
    from pipeline.models import networks as N
    from pipeline.models.editor import frozen, load_weights

    return frozen(load_weights(N.sketch_encoder(profile), path, "sketch_encoder", profile), device)


def tensors_digest(module: nn.Module) -> str:
    """sha256 over a module's tensor names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def train_sketch_ae(part: str, cfg: TrainConfig, freeze_encoder: bool = False) -> TrainResult:
    check_config(cfg, "sketch_ae", part)
    if freeze_encoder:
        frozen_encoder_path(cfg.models_dir, part)  # no encoder to freeze: say so before loading any data
    landmarks = Path(cfg.aligned) / "landmarks.npy"
    uses_contours = not freeze_encoder and cfg.loss_weights.get("contour", 1.0) > 0 and landmarks.exists()
    trainer = Trainer(cfg, inputs=data_inputs(cfg, (part,), sketches=True) + ([landmarks] if uses_contours else []))
    task = SketchAETask(trainer, part, freeze_encoder)
    if freeze_encoder:
        # Resume only a run that trained against this very encoder, in this mode.
        trainer.fingerprint = hashlib.sha256(
            f"{trainer.fingerprint} frozen sketch_encoder {task.encoder_digest}".encode()
        ).hexdigest()
    return trainer.fit(task)


