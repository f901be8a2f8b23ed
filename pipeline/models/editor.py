"""Inference: the trained (or imported) modules of every part behind one `Editor`.

Loads the stage outputs `models/<stage>/<part>.safetensors`; everything that edits faces
(`dfe edit`, evaluate, DFI) goes through `load_editor`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import PARTS
from pipeline.core.profiles import Profile, get_profile, part_boxes
from pipeline.core.progress import track
from pipeline.core.tensors import faces_to_tensor

# What makes each stage's file: used in "missing file" errors.
_MAKER = {
    "sketch_ae": ("train_sketch_ae", "dfe train-sketch-ae --part {part}"),
    "image_encoder": ("train_image_encoder", "dfe train-image-encoder --part {part}"),
    "local": ("train_local", "dfe train-local --part {part}"),
    "fusion": ("train_fusion", "dfe train-fusion"),
}

def stage_weights(stage: str, part: str, models_dir: str | Path = "models") -> Path:
    name = "fusion" if stage == "fusion" else part
    return Path(models_dir) / stage / f"{name}.safetensors"


def require_weights(stage: str, part: str, models_dir: str | Path) -> Path:
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


def frozen(module: nn.Module, device: torch.device) -> nn.Module:
    return module.to(device).eval().requires_grad_(False)


def load_part_modules(
    models_dir: str | Path, part: str, profile: Profile | str, device: torch.device | str = "cpu",
    which: tuple[str, ...] = ("sketch_encoder", "sketch_decoder", "image_encoder", "generator"),
) -> dict[str, nn.Module]:
    """Frozen, eval-mode modules of one part from the stage outputs under `models_dir`."""
    from pipeline.models import networks as N

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
        path = require_weights(stage, part, models_dir)
        out[name] = frozen(load_weights(make(), path, name, profile), device)
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
        from pipeline.models.networks import fuse_canvas

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
        from pipeline.models.networks import fuse_canvas

        sketches = {p: self.parts[p]["sketch_decoder"](geometry[p]) for p in PARTS}
        return fuse_canvas(sketches, self.boxes)


def load_editor(models_dir: str | Path, profile: Profile | str, device: torch.device | str = "cpu") -> Editor:
    from pipeline.models import networks as N

    profile = get_profile(profile) if isinstance(profile, str) else profile
    parts = {p: load_part_modules(models_dir, p, profile, device) for p in PARTS}
    fusion = load_weights(N.GlobalFusion(profile), require_weights("fusion", "fusion", models_dir), "fusion", profile)
    return Editor(profile, part_boxes(profile.resolution), parts, frozen(fusion, torch.device(device)))




def encode(editor, faces: np.ndarray, batch_size: int, device: torch.device, what: str
           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Geometry latents (E_image) part -> (N,C,h,w) and appearance codes part -> (N,A) of
    (N,R,R,3) uint8 faces, kept on the device."""
    geo: dict[str, list[torch.Tensor]] = {p: [] for p in PARTS}
    app: dict[str, list[torch.Tensor]] = {p: [] for p in PARTS}
    for start in track(range(0, len(faces), batch_size), what):
        face = faces_to_tensor(faces[start : start + batch_size], device)
        for p, v in editor.geometry_from_photo(face).items():
            geo[p].append(v)
        for p, v in editor.appearance_codes(face).items():
            app[p].append(v)
    return {p: torch.cat(v) for p, v in geo.items()}, {p: torch.cat(v) for p, v in app.items()}


