"""Inference: the trained (or imported) modules of every part behind one `Editor`.

Loads the stage outputs `models/<stage>/<part>.safetensors`; everything that edits faces
(`dfe edit`, evaluate, DFI) goes through `load_editor`. The sketch decoders load on first use
(`Editor.sketch_from_geometry`): the authors' released weights have none, and every other
path works without them. Inference runs under `torch.inference_mode()`, in fp32 or bf16.
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



class MissingSketchDecoderError(FileNotFoundError):
    """Decoded sketches were asked of weights without D_sketch (the authors' release has none)."""


def sketch_decoder_command(part: str, models_dir: str | Path) -> str:
    """The command that trains `part`'s D_sketch against the encoder already in `models_dir`."""
    return f"dfe train-sketch-ae --part {part} --freeze-encoder --models {models_dir}"


def has_tensors(path: Path, prefix: str) -> bool:
    """Whether a safetensors file holds `prefix.*` tensors (reads the header only)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return any(k.startswith(prefix + ".") for k in f.keys())


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
    # A module built on the meta device (no init, no memory) adopts the loaded tensors.
    on_meta = any(t.is_meta for t in module.state_dict().values())
    module.load_state_dict(state, strict=True, assign=on_meta)
    return module


def built(make, skip_init: bool) -> nn.Module:
    """`make()`, on the meta device with `skip_init` (for load_weights to fill: a paper-profile
    editor loads in seconds instead of first initialising 1.2 B random weights)."""
    if not skip_init:
        return make()
    with torch.device("meta"):
        return make()


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
    skip_init: bool = False,
) -> dict[str, nn.Module]:
    """Frozen, eval-mode modules of one part from the stage outputs under `models_dir`.

    skip_init builds them on the meta device (inference); the trainers keep the random
    initialisation, whose draws from the seeded generator their later modules follow."""
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
        if name == "sketch_decoder" and not has_tensors(path, name):
            raise MissingSketchDecoderError(
                f"{path} has no sketch decoder (the authors' released weights ship none): train one against "
                f"the frozen encoder with `{sketch_decoder_command(part, models_dir)}`"
            )
        out[name] = frozen(load_weights(built(make, skip_init), path, name, profile), device)
    return out


@dataclass
class Editor:
    """Everything inference needs: per-part encoders/decoders/generators and the fusion net.

    Faces and sketches are (B,3,R,R) in [-1,1] at the profile's resolution; per-part values
    are dicts keyed by part. Geometry latents come from photos (E_image) or sketches
    (E_sketch) and share one space (stage 2 aligned them); appearance codes are 4*app_ngf-d.
    Modules run in `dtype` (inputs are cast to it); images and sketches come back as float32.
    A part's "sketch_decoder" is loaded from `models_dir` the first time a sketch is decoded.
    """

    profile: Profile
    boxes: dict[str, tuple[int, int, int]]
    parts: dict[str, dict[str, nn.Module]]
    fusion: nn.Module
    models_dir: Path | None = None
    dtype: torch.dtype = torch.float32
    fusion_dtype: torch.dtype | None = None  # the fusion net's, where it differs (cast_fusion)
    block_dtype: torch.dtype | None = None  # the part nets' residual blocks', where it differs (cast_blocks)
    runtime: str = "torch"  # torch | onnx (models.runtime.onnx_editor: ONNX Runtime sessions on the CPU; a bf16 fusion net stays torch)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self.runtime == "onnx" else next(self.fusion.parameters()).device

    def networks(self) -> list:
        """Every part's networks and the fusion net (a network shared by parts once per part)."""
        return [*(m for mods in self.parts.values() for m in mods.values()), self.fusion]

    def cast(self, dtype: torch.dtype) -> "Editor":
        """Every module (decoders loaded later too) in `dtype`, in place; returns self."""
        for module in self.networks():
            module.to(dtype)
            for block in self._blocks(module):
                block.branch_dtype = None
        self.dtype, self.fusion_dtype, self.block_dtype = dtype, None, None
        return self

    @staticmethod
    def _blocks(module: nn.Module) -> list:
        from pipeline.models.networks import ResBlock

        # an ONNX Runtime network (models.runtime) has none to cast
        return [m for m in module.modules() if isinstance(m, ResBlock)] if isinstance(module, nn.Module) else []

    def cast_blocks(self, dtype: torch.dtype | None) -> "Editor":
        """The residual blocks of the geometry encoders and part generators alone in `dtype`
        (None: leave them), in place; returns self. Their input is cast in and their output back,
        so the nets around them keep their dtype (networks.ResBlock.cast). Those blocks hold most
        of a render's work outside the fusion net and add the least error in bf16 (benchmarks.dtype)."""
        if dtype is not None:
            if self.runtime == "onnx":
                raise ValueError(f"the onnx runtime runs the part nets in fp32; {dtype} blocks are for --runtime torch")
            for mods in self.parts.values():
                for name in ("sketch_encoder", "image_encoder", "generator"):
                    for block in self._blocks(mods[name]) if name in mods else []:
                        block.cast(dtype)
            self.block_dtype = dtype
        return self

    def cast_fusion(self, dtype: torch.dtype | None) -> "Editor":
        """The fusion net alone in `dtype` (None: leave it), in place; returns self. Its input
        canvas is cast to it and its output comes back as float32, as always."""
        if dtype is not None:
            self.fusion.to(dtype)
            self.fusion_dtype = dtype
        return self

    def use_fast_convs(self) -> "Editor":
        """Every network's convolutions with fewer multiplies where that pays (models.fastconv, CPU
        fp32 inference: at the paper profile Winograd for the 1024-channel residual blocks of bg's
        nets and the fusion net and for the fusion net's 7x7 stem, one GEMM and shifted sums for
        its 7x7 head): the same weights, fp32's output to its rounding (python -m benchmarks.dtype
        --alone times an edit); in place, returns self."""
        from pipeline.models.fastconv import use_fast_convs

        for module in self.networks():
            if isinstance(module, nn.Module):  # not an ONNX Runtime session
                use_fast_convs(module)
        return self

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)

    def crops(self, face: torch.Tensor) -> dict[str, torch.Tensor]:
        r = self.profile.resolution
        assert face.ndim == 4 and face.shape[-2:] == (r, r), (face.shape, r)
        face = self._in(face)
        return {p: face[:, :, y:y + s, x:x + s] for p, (x, y, s) in self.boxes.items()}

    @torch.inference_mode()
    def geometry_from_photo(self, face: torch.Tensor) -> dict[str, torch.Tensor]:
        return {p: self.parts[p]["image_encoder"](c) for p, c in self.crops(face).items()}

    @torch.inference_mode()
    def geometry_from_sketch(self, sketch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {p: self.parts[p]["sketch_encoder"](c) for p, c in self.crops(sketch).items()}

    @torch.inference_mode()
    def part_geometry_from_sketch(self, part: str, crop: torch.Tensor) -> torch.Tensor:
        """One part's geometry latent from its sketch crop (B,3,s,s) in [-1,1]."""
        return self.parts[part]["sketch_encoder"](self._in(crop))

    @torch.inference_mode()
    def appearance_codes(self, face: torch.Tensor) -> dict[str, torch.Tensor]:
        return {p: self.parts[p]["generator"].style(c) for p, c in self.crops(face).items()}

    @torch.inference_mode()
    def render(self, geometry: dict[str, torch.Tensor], codes: dict[str, torch.Tensor],
               part_features=None) -> torch.Tensor:
        """Face from per-part geometry latents and appearance codes (one forward pass).
        `part_features(part, geometry, code)` stands in for `self.part_features` (a cache)."""
        features = part_features or self.part_features
        return self.fuse({part: features(part, geometry[part], codes[part]) for part in PARTS})

    @torch.inference_mode()
    def part_features(self, part: str, geometry: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """One part's generator feature map from its geometry latent and appearance code."""
        return self.parts[part]["generator"].feature(self._in(geometry), self._in(code))

    @torch.inference_mode()
    def fuse(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The face (B,3,R,R) float32 from every part's feature map (the fusion net)."""
        from pipeline.models.networks import fuse_canvas

        return self.fusion(fuse_canvas(features, self.boxes).to(self.fusion_dtype or self.dtype)).float()

    @torch.inference_mode()
    def compose(self, geometry: dict[str, torch.Tensor], appearance: dict[str, torch.Tensor]) -> torch.Tensor:
        """Face from per-part geometry latents (E_sketch or E_image) and appearance crops (B,3,s,s)."""
        return self.render(geometry, {p: self.parts[p]["generator"].style(self._in(appearance[p])) for p in PARTS})

    def require_sketch_decoder(self) -> None:
        """Load every part's D_sketch now; MissingSketchDecoderError (one line, naming the
        command that trains it) where the weights have none."""
        for part in PARTS:
            if "sketch_decoder" in self.parts[part]:
                continue
            if self.models_dir is None:
                raise MissingSketchDecoderError(f"this editor has no sketch decoder for {part} and no models folder")
            decoder = load_part_modules(self.models_dir, part, self.profile, self.device, which=("sketch_decoder",),
                                        skip_init=True)
            self.parts[part]["sketch_decoder"] = decoder["sketch_decoder"].to(self.dtype)

    @torch.inference_mode()
    def sketch_from_geometry(self, geometry: dict[str, torch.Tensor]) -> torch.Tensor:
        """An editable whole-face sketch (B,3,R,R): the bg decoder's sketch with each part's
        decoded sketch pasted in its box (same order as the feature canvas)."""
        from pipeline.models.networks import fuse_canvas

        self.require_sketch_decoder()
        sketches = {p: self.parts[p]["sketch_decoder"](self._in(geometry[p])) for p in PARTS}
        return fuse_canvas(sketches, self.boxes).float()


def load_editor(
    models_dir: str | Path, profile: Profile | str, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, sketch_decoder: bool = False, fusion_dtype: torch.dtype | None = None,
    runtime: str = "torch", block_dtype: torch.dtype | None = None,
) -> Editor:
    """The editor of the weights under `models_dir`, its modules in `dtype` (the fusion net in
    `fusion_dtype`, the part nets' residual blocks in `block_dtype`, when given). The sketch
    decoders load on first use, or now with `sketch_decoder=True` (failing early without them).
    runtime "onnx": the networks run by ONNX Runtime (models.runtime; CPU, fp32; a fusion net in
    bf16 stays in PyTorch); "torch" on the CPU: convolutions with fewer multiplies (Editor.use_fast_convs)."""
    from pipeline.models.runtime import RUNTIMES

    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose {' or '.join(RUNTIMES)}")
    from pipeline.models import networks as N

    profile = get_profile(profile) if isinstance(profile, str) else profile
    which = ("sketch_encoder", "image_encoder", "generator")
    parts = {p: load_part_modules(models_dir, p, profile, device, which=which, skip_init=True) for p in PARTS}
    fusion = load_weights(built(lambda: N.GlobalFusion(profile), True), require_weights("fusion", "fusion", models_dir),
                          "fusion", profile)
    editor = Editor(profile, part_boxes(profile.resolution), parts, frozen(fusion, torch.device(device)),
                    Path(models_dir)).cast(dtype).cast_fusion(fusion_dtype).cast_blocks(block_dtype)
    if runtime == "torch" and torch.device(device).type == "cpu":
        editor.use_fast_convs()
    if sketch_decoder:
        editor.require_sketch_decoder()
    if runtime == "onnx":
        from pipeline.models.runtime import onnx_editor

        onnx_editor(editor)
    return editor


def photo_to_sketch_path(models_dir: str | Path) -> Path:
    return Path(models_dir) / "photo_to_sketch" / "photo_to_sketch.safetensors"


def load_photo_to_sketch(
    models_dir: str | Path, profile: Profile | str, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """The authors' photo-to-sketch generator (their sketch_generator.pkl, imported), frozen."""
    from pipeline.models import networks as N

    profile = get_profile(profile) if isinstance(profile, str) else profile
    path = photo_to_sketch_path(models_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} missing: it comes with the authors' weights (sketch_generator.pkl), "
            f"`dfe import-official DIR --out {models_dir}`"
        )
    module = built(lambda: N.PhotoToSketch(profile), True)
    return frozen(load_weights(module, path, "p2s", profile), torch.device(device)).to(dtype)


@torch.inference_mode()
def sketch_of_face(p2s: nn.Module, face: torch.Tensor) -> torch.Tensor:
    """(B,3,R,R) face in [-1,1] -> (B,1,R,R) float32 sketch in [-1,1] (channel mean)."""
    dtype = next(p2s.parameters()).dtype
    return p2s(face.to(dtype)).float().mean(dim=1, keepdim=True)


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
        for p, v in editor.appearance_codes(face).items():  # a wrapper may add keys (colour_norm)
            app.setdefault(p, []).append(v)
    return {p: torch.cat(v) for p, v in geo.items()}, {p: torch.cat(v) for p, v in app.items()}


