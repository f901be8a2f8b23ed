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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import PARTS
from pipeline.augment import Augmenter
from pipeline.data import ComponentData, IndexSampler
from pipeline.profiles import Profile, get_profile, part_boxes
from pipeline.trainer import TrainConfig, Trainer, TrainResult

# Loss weights per stage; params.yaml `train_<stage>.loss_weights` overrides any of them.
DEFAULT_LOSS_WEIGHTS: dict[str, dict[str, float]] = {
    "sketch_ae": {"l1": 1.0},
    "image_encoder": {"act": 1.0},
    "local": {"rec": 10.0, "fm": 10.0, "perc": 10.0, "gan": 1.0, "geo": 10.0, "cycle": 10.0},
    "fusion": {"l1": 10.0, "fm": 10.0, "perc": 10.0, "gan": 1.0},
}

# What makes each stage's file: used in "missing file" errors.
_MAKER = {
    "sketch_ae": ("train_sketch_ae", "dfe train-sketch-ae --part {part}"),
    "image_encoder": ("train_image_encoder", "dfe train-image-encoder --part {part}"),
    "local": ("train_local", "dfe train-local --part {part}"),
    "fusion": ("train_fusion", "dfe train-fusion"),
}

N_SAMPLES = 4  # faces in the dvclive sample grids


def stage_weights(stage: str, part: str, models_dir: str | Path = "models") -> Path:
    name = "fusion" if stage == "fusion" else part
    return Path(models_dir) / stage / f"{name}.safetensors"


def _require(stage: str, part: str, models_dir: str | Path) -> Path:
    path = stage_weights(stage, part, models_dir)
    if not path.exists():
        dvc_stage, cmd = _MAKER[stage]
        target = dvc_stage if stage == "fusion" else f"{dvc_stage}@{part}"
        raise FileNotFoundError(
            f"{path} missing: run `dvc repro {target}` or `{cmd.format(part=part)}`"
        )
    return path


def load_weights(module: nn.Module, path: Path, prefix: str, profile: Profile) -> nn.Module:
    """Load the `prefix.*` tensors of a stage's safetensors file into `module` (strict)."""
    from safetensors.torch import load_file

    meta = path.with_suffix(".json")
    if meta.exists():
        made_with = json.loads(meta.read_text()).get("profile", {}).get("name")
        if made_with is not None and made_with != profile.name:
            raise ValueError(
                f"{path} was trained with profile {made_with!r}, not {profile.name!r}: "
                "retrain it or set `profile` in params.yaml to match"
            )
    tensors = load_file(str(path))
    state = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    if not state:
        raise KeyError(f"{path} holds no '{prefix}.*' tensors (keys: {sorted(tensors)[:4]}...)")
    module.load_state_dict(state, strict=True)
    return module


def init_appearance_encoder(generator: nn.Module) -> None:
    """He-normal init for the appearance encoder's convs (ReLU, no norm).

    With PyTorch's default init the signal shrinks through its six un-normalised convs, so at
    step 0 every image gets almost the same code (cross-sample std ~1e-3 of the mean) and the
    generator learns to ignore appearance; He init keeps codes distinct from the start.
    """
    for m in generator.enc_style.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _frozen(module: nn.Module, device: torch.device) -> nn.Module:
    return module.to(device).eval().requires_grad_(False)


def load_part_modules(
    models_dir: str | Path, part: str, profile: Profile | str, device: torch.device | str = "cpu",
    which: tuple[str, ...] = ("sketch_encoder", "sketch_decoder", "image_encoder", "generator"),
) -> dict[str, nn.Module]:
    """Frozen, eval-mode modules of one part from the stage outputs under `models_dir`."""
    from pipeline import networks as N

    profile = get_profile(profile) if isinstance(profile, str) else profile
    device = torch.device(device)
    build = {
        "sketch_encoder": ("sketch_ae", lambda: N.sketch_encoder(profile)),
        "sketch_decoder": ("sketch_ae", lambda: N.SketchDecoder(profile)),
        "image_encoder": ("image_encoder", lambda: N.image_encoder(profile)),
        "generator": ("local", lambda: N.PartGenerator(profile)),
    }
    out = {}
    for name in which:
        stage, make = build[name]
        path = _require(stage, part, models_dir)
        out[name] = _frozen(load_weights(make(), path, name, profile), device)
    return out


@dataclass
class Editor:
    """Everything inference needs: per-part encoders/decoders/generators and the fusion net.

    Faces and sketches are (B,3,R,R) in [-1,1] at the profile's resolution; per-part values
    are dicts keyed by part. Geometry latents come from photos (E_image) or sketches
    (E_sketch) and share one space (stage 2 aligned them); appearance codes are 4*app_ngf-d.
    """

    profile: Profile
    boxes: dict[str, tuple[int, int, int]]
    parts: dict[str, dict[str, nn.Module]]
    fusion: nn.Module

    def crops(self, face: torch.Tensor) -> dict[str, torch.Tensor]:
        r = self.profile.resolution
        assert face.ndim == 4 and face.shape[-2:] == (r, r), (face.shape, r)
        return {p: face[:, :, y:y + s, x:x + s] for p, (x, y, s) in self.boxes.items()}

    @torch.no_grad()
    def geometry_from_photo(self, face: torch.Tensor) -> dict[str, torch.Tensor]:
        return {p: self.parts[p]["image_encoder"](c) for p, c in self.crops(face).items()}

    @torch.no_grad()
    def geometry_from_sketch(self, sketch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {p: self.parts[p]["sketch_encoder"](c) for p, c in self.crops(sketch).items()}

    @torch.no_grad()
    def appearance_codes(self, face: torch.Tensor) -> dict[str, torch.Tensor]:
        return {p: self.parts[p]["generator"].style(c) for p, c in self.crops(face).items()}

    @torch.no_grad()
    def render(self, geometry: dict[str, torch.Tensor], codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Face from per-part geometry latents and appearance codes (one forward pass)."""
        from pipeline.networks import fuse_canvas

        feats = {}
        for part in PARTS:
            _, feats[part] = self.parts[part]["generator"].decode(geometry[part], codes[part])
        return self.fusion(fuse_canvas(feats, self.boxes))

    @torch.no_grad()
    def compose(self, geometry: dict[str, torch.Tensor], appearance: dict[str, torch.Tensor]) -> torch.Tensor:
        """Face from per-part geometry latents (E_sketch or E_image) and appearance crops (B,3,s,s)."""
        return self.render(geometry, {p: self.parts[p]["generator"].style(appearance[p]) for p in PARTS})

    @torch.no_grad()
    def sketch_from_geometry(self, geometry: dict[str, torch.Tensor]) -> torch.Tensor:
        """An editable whole-face sketch (B,3,R,R): the bg decoder's sketch with each part's
        decoded sketch pasted in its box (same order as the feature canvas)."""
        from pipeline.networks import fuse_canvas

        sketches = {p: self.parts[p]["sketch_decoder"](geometry[p]) for p in PARTS}
        return fuse_canvas(sketches, self.boxes)


def load_editor(models_dir: str | Path, profile: Profile | str, device: torch.device | str = "cpu") -> Editor:
    from pipeline import networks as N

    profile = get_profile(profile) if isinstance(profile, str) else profile
    parts = {p: load_part_modules(models_dir, p, profile, device) for p in PARTS}
    fusion = load_weights(N.GlobalFusion(profile), _require("fusion", "fusion", models_dir), "fusion", profile)
    return Editor(profile, part_boxes(profile.resolution), parts, _frozen(fusion, torch.device(device)))


# ---------------------------------------------------------------------------------------------
# Shared task plumbing
# ---------------------------------------------------------------------------------------------


class _Base:
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
        self.data = ComponentData(self.cfg.components, "train", parts, self.device, load_sketches=sketches)
        expected = part_boxes(self.profile.resolution)
        for p in parts:
            if self.data.size(p) != expected[p][2]:
                raise ValueError(
                    f"{p} crops are {self.data.size(p)} px but profile {self.profile.name!r} wants "
                    f"{expected[p][2]}: rebuild data/components with the same profile"
                )
        # Sample grids show held-out faces when the test split exists.
        has_test = (Path(self.cfg.components) / "test" / "manifest.csv").exists()
        self.shown = ComponentData(self.cfg.components, "test", parts, self.device, load_sketches=sketches) \
            if has_test else self.data
        self.shown_idx = torch.arange(min(N_SAMPLES, len(self.shown)))
        rank, world = trainer.dist.rank, trainer.dist.world_size
        self.sampler = IndexSampler(len(self.data), self.cfg.batch_size, self.cfg.seed, rank if world > 1 else 0)

    def summary(self) -> dict[str, Any]:
        return {}


def _grid(rows: list[torch.Tensor], labels: list[str]) -> np.ndarray:
    """Columns = sample faces, rows = kinds (input, reconstruction, ...)."""
    from pipeline.viz import make_grid, to_uint8

    n = rows[0].shape[0]
    tiles = [im for row in rows for im in to_uint8(row.float().clamp(-1, 1))]
    return make_grid(tiles, nrow=n, row_labels=labels)


def _split(feats: list[list[torch.Tensor]], sizes: list[int]) -> list[list[list[torch.Tensor]]]:
    """Split every discriminator feature along the batch: one feature pyramid per chunk."""
    per_scale = [[f.split(sizes) for f in scale] for scale in feats]
    return [[[f[i] for f in scale] for scale in per_scale] for i in range(len(sizes))]


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# ---------------------------------------------------------------------------------------------
# Stage 1: sketch autoencoder
# ---------------------------------------------------------------------------------------------


class SketchAETask(_Base):
    stage = "sketch_ae"

    def __init__(self, trainer: Trainer, part: str) -> None:
        from pipeline import networks as N

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
        from pipeline import losses as L

        loss = L.l1(rec.float(), sketch)
        _step(self.optimizers["autoencoder"], self.w["l1"] * loss)
        return {"l1": loss.detach()}

    def sample_grid(self) -> np.ndarray:
        s = self.shown.sketches(self.part, self.shown_idx)
        return _grid([s, self.decoder(self.encoder(s))], ["sketch", "recon"])

    def export(self) -> dict[str, nn.Module]:
        return self.modules


# ---------------------------------------------------------------------------------------------
# Stage 2: image encoder into the sketch latent
# ---------------------------------------------------------------------------------------------


class ImageEncoderTask(_Base):
    stage = "image_encoder"

    def __init__(self, trainer: Trainer, part: str) -> None:
        from pipeline import networks as N

        super().__init__(trainer, (part,), sketches=True)
        self.part = part
        frozen = load_part_modules(self.cfg.models_dir, part, self.profile, self.device,
                                   which=("sketch_encoder", "sketch_decoder"))
        self.sketch_encoder, self.sketch_decoder = frozen["sketch_encoder"], frozen["sketch_decoder"]
        self.encoder = N.image_encoder(self.profile).to(self.device)
        self.encoder_t = trainer.wrap(self.encoder)
        self.aug = Augmenter(self.cfg.augment, part).to(self.device)
        self.modules = {"image_encoder": self.encoder}
        self.optimizers = {"image_encoder": trainer.adam(self.encoder)}

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.batch()
        return self.aug.pair(self.data.photos(self.part, idx), self.data.sketches(self.part, idx))

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        from pipeline import losses as L

        photo, sketch = batch
        with self.trainer.autocast():
            with torch.no_grad():
                _, target = self.sketch_decoder(self.sketch_encoder(sketch), return_activations=True)
            _, acts = self.sketch_decoder(self.encoder_t(photo), return_activations=True)
        assert len(acts) == len(target) == 7, "the decoder must expose its 7 activations"
        loss = L.activation_l1([a.float() for a in acts], [t.float() for t in target])
        _step(self.optimizers["image_encoder"], self.w["act"] * loss)
        return {"act": loss.detach()}

    def sample_grid(self) -> np.ndarray:
        photo = self.shown.photos(self.part, self.shown_idx)
        sketch = self.shown.sketches(self.part, self.shown_idx)
        from_photo = self.sketch_decoder(self.encoder(photo))
        from_sketch = self.sketch_decoder(self.sketch_encoder(sketch))
        return _grid([photo, sketch, from_photo, from_sketch], ["photo", "sketch", "D(Eimg)", "D(Esk)"])

    def export(self) -> dict[str, nn.Module]:
        return self.modules


# ---------------------------------------------------------------------------------------------
# Stage 3: local disentanglement
# ---------------------------------------------------------------------------------------------


class LocalTask(_Base):
    stage = "local"

    def __init__(self, trainer: Trainer, part: str) -> None:
        from pipeline import losses as L
        from pipeline import networks as N

        super().__init__(trainer, (part,), sketches=False)
        self.part = part
        self.geometry = load_part_modules(self.cfg.models_dir, part, self.profile, self.device,
                                          which=("image_encoder",))["image_encoder"]
        self.generator = N.PartGenerator(self.profile).to(self.device)
        init_appearance_encoder(self.generator)
        self.disc = N.MultiScaleDiscriminator(self.profile).to(self.device)
        self.generator_t, self.disc_t = trainer.wrap(self.generator), trainer.wrap(self.disc)
        self.perceptual = L.PerceptualLoss(device=self.device)
        self.aug = Augmenter(self.cfg.augment, part).to(self.device)
        self.modules = {"generator": self.generator, "discriminator": self.disc}
        self.optimizers = {
            "generator": trainer.adam(self.generator),
            "discriminator": trainer.adam(self.disc, lr=self.cfg.lr_d),
        }

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.sampler.pairs()
        return self.aug.photo(self.data.photos(self.part, a)), self.aug.photo(self.data.photos(self.part, b))

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        from pipeline import losses as L

        x1, x2 = batch
        B = x1.shape[0]
        with self.trainer.autocast():
            with torch.no_grad():
                z1, z2 = self.geometry(torch.cat([x1, x2])).chunk(2)
            rec, _ = self.generator_t(z1, x1)  # self-reconstruction: I1 == I2
            swap, _ = self.generator_t(z1, x2)  # geometry of x1, appearance of x2
            cyc, _ = self.generator_t(z2, swap)  # back to x2: appearance must survive the swap
            geo = L.l1(self.geometry(swap).float(), z1.float())
            # Generator side of the GAN: the discriminator is a fixed loss here (raw module, no
            # grads for its weights, so DDP's reducer never sees it).
            self.disc.requires_grad_(False)
            real_f, rec_f, swap_f = _split(self.disc(torch.cat([x1, rec, swap])), [B, B, B])
        rec, swap, cyc = rec.float(), swap.float(), cyc.float()
        terms = {
            "rec": L.rgb_to_lab_l1(rec, x1),
            "fm": L.feature_matching_loss(real_f, rec_f),
            "perc": self.perceptual(rec, x1).float(),
            "gan": 0.5 * (L.lsgan_g_loss(rec_f) + L.lsgan_g_loss(swap_f)),
            "geo": geo,
            "cycle": L.rgb_to_lab_l1(cyc, x2),
        }
        g_total = sum(self.w[k] * v for k, v in terms.items())
        _step(self.optimizers["generator"], g_total)
        self.disc.requires_grad_(True)
        with self.trainer.autocast():
            feats = self.disc_t(torch.cat([x1, x2, rec.detach(), swap.detach()]))
        d_real, d_fake = _split(feats, [2 * B, 2 * B])
        d_loss = L.lsgan_d_loss(d_real, d_fake)
        _step(self.optimizers["discriminator"], d_loss)
        return {**{k: v.detach() for k, v in terms.items()}, "g_total": g_total.detach(), "d": d_loss.detach()}

    def sample_grid(self) -> np.ndarray:
        x1 = self.shown.photos(self.part, self.shown_idx)
        x2 = x1.roll(1, dims=0)
        z1 = self.geometry(x1)
        rec, _ = self.generator(z1, x1)
        swap, _ = self.generator(z1, x2)
        return _grid([x1, rec, x2, swap], ["geometry", "recon", "appearance", "swap"])

    def export(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    def summary(self) -> dict[str, Any]:
        return {"perceptual_available": bool(self.perceptual.available),
                "perceptual_reason": self.perceptual.reason}


# ---------------------------------------------------------------------------------------------
# Stage 4: global fusion
# ---------------------------------------------------------------------------------------------


class FusionTask(_Base):
    stage = "fusion"

    def __init__(self, trainer: Trainer) -> None:
        from pipeline import losses as L
        from pipeline import networks as N

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
        self.aug = Augmenter(self.cfg.augment, "bg").to(self.device)
        self.modules = {"fusion": self.fusion, "discriminator": self.disc}
        self.optimizers = {
            "fusion": trainer.adam(self.fusion),
            "discriminator": trainer.adam(self.disc, lr=self.cfg.lr_d),
        }

    def _photos(self, data: ComponentData, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {p: data.photos(p, idx) for p in PARTS}

    @torch.no_grad()
    def _canvas(self, photos: dict[str, torch.Tensor]) -> torch.Tensor:
        from pipeline.networks import fuse_canvas

        feats = {}
        for p, x in photos.items():
            m = self.locals[p]
            _, feats[p] = m["generator"](m["image_encoder"](x), x)
        return fuse_canvas(feats, self.boxes)

    def next_batch(self) -> dict[str, torch.Tensor]:
        return self.aug.faces(self._photos(self.data, self.sampler.batch()))

    def train_step(self, photos: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from pipeline import losses as L

        target = photos["bg"]
        B = target.shape[0]
        with self.trainer.autocast():
            canvas = self._canvas(photos)
            out = self.fusion_t(canvas)
            assert out.shape == target.shape, (out.shape, target.shape)
            self.disc.requires_grad_(False)
            real_f, fake_f = _split(self.disc(torch.cat([target, out])), [B, B])
        out32 = out.float()
        terms = {
            "l1": L.l1(out32, target),
            "fm": L.feature_matching_loss(real_f, fake_f),
            "perc": self.perceptual(out32, target).float(),
            "gan": L.lsgan_g_loss(fake_f),
        }
        g_total = sum(self.w[k] * v for k, v in terms.items())
        _step(self.optimizers["fusion"], g_total)
        self.disc.requires_grad_(True)
        with self.trainer.autocast():
            d_real, d_fake = _split(self.disc_t(torch.cat([target, out.detach()])), [B, B])
        d_loss = L.lsgan_d_loss(d_real, d_fake)
        _step(self.optimizers["discriminator"], d_loss)
        return {**{k: v.detach() for k, v in terms.items()}, "g_total": g_total.detach(), "d": d_loss.detach()}

    def sample_grid(self) -> np.ndarray:
        photos = self._photos(self.shown, self.shown_idx)
        m = self.locals["bg"]
        bg_local, _ = m["generator"](m["image_encoder"](photos["bg"]), photos["bg"])
        return _grid([photos["bg"], bg_local, self.fusion(self._canvas(photos))], ["photo", "bg part", "fused"])

    def export(self) -> dict[str, nn.Module]:
        return {"fusion": self.fusion}

    def summary(self) -> dict[str, Any]:
        return {"perceptual_available": bool(self.perceptual.available),
                "perceptual_reason": self.perceptual.reason}


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def _check(cfg: TrainConfig, stage: str, part: str) -> None:
    if cfg.stage != stage or cfg.part != part:
        raise ValueError(f"config is for {cfg.stage}/{cfg.part}, called as {stage}/{part}")
    if part != "fusion" and part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose one of {PARTS}")


def _data_inputs(cfg: TrainConfig, parts: tuple[str, ...], sketches: bool) -> list[Path]:
    d = Path(cfg.components) / "train"
    files = [d / "manifest.csv"]
    for p in parts:
        files.append(d / f"{p}_photo.npy")
        if sketches:
            files.append(d / f"{p}_sketch.npy")
    return [f for f in files if f.exists()]  # missing files get ComponentData's clear error


def train_sketch_ae(part: str, cfg: TrainConfig) -> TrainResult:
    _check(cfg, "sketch_ae", part)
    trainer = Trainer(cfg, inputs=_data_inputs(cfg, (part,), sketches=True))
    return trainer.fit(SketchAETask(trainer, part))


def train_image_encoder(part: str, cfg: TrainConfig) -> TrainResult:
    _check(cfg, "image_encoder", part)
    upstream = [_require("sketch_ae", part, cfg.models_dir)]
    trainer = Trainer(cfg, inputs=_data_inputs(cfg, (part,), sketches=True) + upstream)
    return trainer.fit(ImageEncoderTask(trainer, part))


def train_local(part: str, cfg: TrainConfig) -> TrainResult:
    _check(cfg, "local", part)
    upstream = [_require("image_encoder", part, cfg.models_dir)]
    trainer = Trainer(cfg, inputs=_data_inputs(cfg, (part,), sketches=False) + upstream)
    return trainer.fit(LocalTask(trainer, part))


def train_fusion(cfg: TrainConfig) -> TrainResult:
    _check(cfg, "fusion", "fusion")
    upstream = [_require(s, p, cfg.models_dir) for p in PARTS for s in ("image_encoder", "local")]
    trainer = Trainer(cfg, inputs=_data_inputs(cfg, PARTS, sketches=False) + upstream)
    return trainer.fit(FusionTask(trainer))
