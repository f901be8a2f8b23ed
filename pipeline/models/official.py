"""Import the released DeepFaceEditing checkpoints, and safetensors I/O for module dicts.

The released files are pickles of {name: float32 numpy array}. They are read with a
restricted unpickler that can only rebuild numpy arrays, so a tampered file cannot run code.
Every name and shape is checked against the layout of our paper-profile modules (which
tests/test_networks.py proves equal to specs/official-checkpoint-layout.json), then written
in the layout the trainer writes: models/<stage>/<part>.safetensors with a module prefix.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import PARTS
from pipeline.core.io import atomic_path, save_json
from pipeline.core.profiles import Profile, get_profile
from pipeline.models.weights import save_modules_safetensors

__all__ = [
    "OFFICIAL_FILES",
    "UnsafePickleError",
    "LayoutError",
    "safe_load_pickle",
    "official_layout",
    "check_layout",
    "import_official",
    "write_release",
    "save_modules_safetensors",
]

Layout = dict[str, dict[str, tuple[int, ...]]]  # file key -> tensor name -> shape

# Official file (with {part}) -> (our stage folder, our file stem, module prefix).
OFFICIAL_FILES: dict[str, tuple[str, str, str]] = {
    "sketch_encoder/sketch_encoder_{part}.pkl": ("sketch_ae", "{part}", "sketch_encoder"),
    "image_encoder/image_encoder_{part}.pkl": ("image_encoder", "{part}", "image_encoder"),
    "generator/generator_{part}.pkl": ("local", "{part}", "generator"),
    "global_fuse.pkl": ("fusion", "fusion", "fusion"),
    "sketch_generator.pkl": ("photo_to_sketch", "photo_to_sketch", "p2s"),
}

NO_SKETCH_DECODER = (
    "the release has no sketch decoder: sketch_ae/<part>.safetensors hold only 'sketch_encoder.*'; "
    "editing from photos and sketches works, but decoding a geometry latent back to a sketch (and "
    "training the image-encoder stage against it) needs D_sketch, trained against the frozen "
    "released encoder by `dfe train-sketch-ae --part <part> --freeze-encoder --models <out>`"
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than numpy array reconstruction."""


class LayoutError(ValueError):
    """Checkpoint tensors whose names or shapes differ from the expected layout."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a pickled dict of numpy arrays needs, under numpy 1.x and 2.x names."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    import codecs

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): OrderedDict,
        # Protocols 0-2 store raw bytes as latin-1 text re-encoded by _codecs.encode.
        ("_codecs", "encode"): codecs.encode,
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to unpickle {module}.{name} (only numpy arrays are allowed); "
                "the file is not a plain checkpoint and may be malicious"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in a checkpoint")


def safe_load_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a pickled {name: float array} without executing anything else; float32 out."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            obj = _ArrayUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise UnsafePickleError(f"{path}: not a readable checkpoint pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, Mapping):
        raise UnsafePickleError(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, np.ndarray) or v.dtype.kind != "f":
            raise UnsafePickleError(
                f"{path}: entry {k!r} is {type(v).__name__}"
                f"{'/' + str(v.dtype) if isinstance(v, np.ndarray) else ''}, not a float array"
            )
        out[k] = np.ascontiguousarray(v, dtype=np.float32)
    return out


def _official_modules(profile: Profile) -> dict[str, Callable[[], nn.Module]]:
    from pipeline.models import networks as N

    return {
        "sketch_encoder/sketch_encoder_{part}.pkl": lambda: N.sketch_encoder(profile),
        "image_encoder/image_encoder_{part}.pkl": lambda: N.image_encoder(profile),
        "generator/generator_{part}.pkl": lambda: N.PartGenerator(profile),
        "global_fuse.pkl": lambda: N.GlobalFusion(profile),
        "sketch_generator.pkl": lambda: N.PhotoToSketch(profile),
    }


def official_layout(profile: Profile | None = None) -> Layout:
    """Names and shapes per official file for `profile`'s modules (paper: the released layout)."""
    profile = profile or get_profile("paper")
    layout = {}
    for key, make in _official_modules(profile).items():
        with torch.device("meta"):  # shapes only, no memory
            layout[key] = {n: tuple(t.shape) for n, t in make().state_dict().items()}
    return layout


def check_layout(source: str, arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise LayoutError listing every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    wrong = [
        f"{k}: {tuple(arrays[k].shape)} != {tuple(expected[k])}"
        for k in expected
        if k in arrays and tuple(arrays[k].shape) != tuple(expected[k])
    ]
    if missing or extra or wrong:
        lines = [f"{source} does not match the expected layout:"]
        for title, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
        raise LayoutError("\n".join(lines))


def import_official(
    src_dir: Path,
    out_dir: Path,
    parts: tuple[str, ...] = PARTS,
    *,
    profile: Profile | None = None,
    layout: Layout | None = None,
) -> dict[str, Any]:
    """Convert the released checkpoints under `src_dir` to our safetensors layout in `out_dir`.

    `profile` (default paper) builds the modules; `layout` (default: that profile's own
    state_dict shapes) is what every file is checked against. All files are checked to exist
    before anything is written; each is then read safely, checked, loaded strictly into its
    module and written atomically, one at a time to bound memory (a part generator is 333 MB).
    Returns a report: written files, tensor and parameter counts, notes.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    profile = profile or get_profile("paper")
    layout = layout if layout is not None else official_layout(profile)
    makers = _official_modules(profile)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown parts {unknown}; choose from {PARTS}")

    jobs = []  # (source file, layout key, output file, prefix)
    for key, (stage, stem, prefix) in OFFICIAL_FILES.items():
        for part in parts if "{part}" in key else (None,):
            src = src_dir / key.format(part=part)
            out = out_dir / stage / f"{stem.format(part=part)}.safetensors"
            jobs.append((src, key, out, prefix))
    absent = [str(src.relative_to(src_dir)) for src, *_ in jobs if not src.is_file()]
    if absent:
        raise FileNotFoundError(f"{src_dir} lacks {len(absent)} released checkpoint(s): " + ", ".join(absent))

    files = {}
    for src, key, out, prefix in jobs:
        arrays = safe_load_pickle(src)
        check_layout(str(src), arrays, layout[key])
        with torch.device("meta"):
            module = makers[key]()
        # assign=True adopts the arrays' storage instead of allocating a second copy.
        module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=True, assign=True)
        save_modules_safetensors(out, {prefix: module}, metadata={"source": key, "profile": profile.name})
        # The trainer's loaders read the profile from the sidecar JSON next to the weights.
        save_json(out.with_suffix(".json"), {"profile": profile.to_dict(), "source": str(src.relative_to(src_dir))})
        files[str(out.relative_to(out_dir))] = {
            "source": str(src.relative_to(src_dir)),
            "tensors": len(arrays),
            "parameters": int(sum(a.size for a in arrays.values())),
        }
        del module, arrays
    return {
        "profile": profile.name,
        "parts": list(parts),
        "files": files,
        "parameters": sum(f["parameters"] for f in files.values()),
        "notes": [NO_SKETCH_DECODER],
    }


def write_release(
    dst: str | os.PathLike, profile: Profile | None = None, parts: tuple[str, ...] = PARTS, seed: int = 0,
    protocol: int = 4,
) -> dict[str, int]:
    """Random weights in the released format: pickled {name: float32 numpy array} files named as
    the authors' (sketch_encoder/sketch_encoder_<part>.pkl, ..., sketch_generator.pkl), shaped
    as `profile`'s modules (default paper: the released shapes). For tests and dry runs of
    `dfe import-official` -> `dfe edit` without the authors' files. Weights are fan-in scaled
    normals (norm layers: weight 1, bias 0), so outputs stay finite; returns file -> tensor count.
    """
    dst = Path(dst)
    rng = np.random.default_rng(seed)
    written = {}
    for key, shapes in official_layout(profile).items():
        for part in parts if "{part}" in key else (None,):
            arrays = {}
            for name, shape in shapes.items():
                if len(shape) > 1:  # conv weight, scaled by its fan-in (roughly, for transposed ones)
                    fan_in = int(np.prod(shape[1:]))
                    a = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(1.0 / max(fan_in, 1)))
                elif name.endswith("weight"):  # norm scale
                    a = np.ones(shape, np.float32)
                else:
                    a = np.zeros(shape, np.float32)
                arrays[name] = a
            path = dst / key.format(part=part)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    pickle.dump(arrays, f, protocol=protocol)
            written[str(path.relative_to(dst))] = len(arrays)
            del arrays
    return written

