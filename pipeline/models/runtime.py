"""runtime: the editor's networks run by ONNX Runtime instead of PyTorch eager (CPU, fp32).

On a CPU, PyTorch eager runs each layer as its own kernel. ONNX Runtime fuses the graph
(convolution + bias + activation, instance norm) and lays out the activations for its own
kernels, which run on AVX2 as on AVX-512. The output is fp32 like eager's (within ~1e-5), so
the paper profile's edits get faster on every CPU without bf16's loss of precision
(`python -m benchmarks.dtype` prints the ratio and PSNR).

`onnx_editor(editor)` replaces each part's image and sketch encoder, the generator's style
encoder and decoder, and the fusion net with an ONNX Runtime session of the same network;
sketch decoders stay in PyTorch (they run once per `dfe sketch`), and so does a fusion net cast
to bf16 (`--dtype bf16-fusion`: on CPUs with native bf16 oneDNN's bf16 kernels beat ONNX
Runtime's fp32 on it; together 0.58x fp32 eager per paper render at 43 dB). Each network is
exported once (`torch.onnx.export`, a few seconds per network at 512 px) and kept in the cache
folder (`DFE_CACHE`, else ~/.cache/dfe) under a key of its weights, input shape and PyTorch
version, so later commands only load it. Needs `pip install -e ".[onnx]"` (onnx + onnxruntime).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

RUNTIMES = ("torch", "onnx")
ENTRIES = ("image_encoder", "sketch_encoder", "style", "decode")


class MissingRuntimeError(ImportError, ValueError):
    """ONNX Runtime (or onnx, for the export) is not installed (a ValueError too: the commands
    print it as the one-line error of a setting that cannot be used)."""


def require_onnx() -> Any:
    """The onnxruntime module; MissingRuntimeError (one line, with the fix) without it or onnx."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes through it)
        import onnxruntime
    except ImportError as e:
        raise MissingRuntimeError(f"--runtime onnx needs onnx and onnxruntime ({e.name} is missing): "
                                  'pip install onnx onnxruntime (or -e ".[onnx]")') from e
    return onnxruntime


def cache_dir() -> Path:
    return Path(os.environ.get("DFE_CACHE") or Path.home() / ".cache" / "dfe") / "onnx"


def weights_digest(module: nn.Module) -> str:
    """A key of a module's weights: every tensor's name, shape, sum and a strided sample of its
    values (hashing every value of the paper profile's 1.2 B would take seconds per command)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        flat = t.detach().reshape(-1).float()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}{float(flat.sum(dtype=torch.float64)):.10e}".encode())
        h.update(flat[:: max(1, flat.numel() // 4096)].cpu().numpy().tobytes())
    return h.hexdigest()[:24]


class _Decode(nn.Module):
    """The generator's decoder as one graph: (geometry latent, appearance code) -> features."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, geometry: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.generator.feature(geometry, code)


class _Style(nn.Module):
    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        return self.generator.style(crop)


class OnnxNet:
    """A network as an ONNX Runtime session, called like the module it replaces: float32
    tensors in (any batch size), a float32 tensor out on the CPU."""

    def __init__(self, session: Any, what: str) -> None:
        self.session = session
        self.what = what
        self.inputs = [i.name for i in session.get_inputs()]

    def __call__(self, *xs: torch.Tensor) -> torch.Tensor:
        assert len(xs) == len(self.inputs), (self.what, len(xs), self.inputs)
        feeds = {n: np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy()) for n, x in zip(self.inputs, xs)}
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def to(self, *args, **kwargs) -> "OnnxNet":
        """Casting an ONNX network is not offered: it runs in fp32 (Editor.cast would call this)."""
        dtype = next((a for a in (*args, kwargs.get("dtype")) if isinstance(a, torch.dtype)), None)
        if dtype not in (None, torch.float32):
            raise ValueError(f"the onnx runtime runs in fp32; {dtype} is for --runtime torch")
        return self


class OnnxGenerator:
    """A part generator's two entry points (`style`, `feature`) as ONNX networks."""

    def __init__(self, style: OnnxNet, decode: OnnxNet) -> None:
        self._style, self._decode = style, decode

    def style(self, crop: torch.Tensor) -> torch.Tensor:
        return self._style(crop)

    def feature(self, geometry: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self._decode(geometry, code)

    def to(self, *args, **kwargs) -> "OnnxGenerator":
        self._style.to(*args, **kwargs)
        return self


def _session(module: nn.Module, args: tuple[torch.Tensor, ...], what: str, threads: int, cache: Path | None) -> OnnxNet:
    """`module` at the inputs' shapes (batch free) as an ONNX Runtime session, exported once per
    weights / shapes / PyTorch version and kept under `cache` (None: not kept)."""
    ort = require_onnx()
    names = [f"x{i}" for i in range(len(args))]
    key = hashlib.sha256(f"{what}{[tuple(a.shape[1:]) for a in args]}{torch.__version__}{weights_digest(module)}"
                         .encode()).hexdigest()[:32]
    path = None if cache is None else cache / f"{what}-{key}.onnx"
    if path is not None and path.exists():
        model: bytes | str = str(path)
    else:
        import warnings

        buf = io.BytesIO()
        # The tracer warns about the networks' shape asserts and the exporter about its own
        # deprecations: the shapes are the ones exported, and a user cannot act on either.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(a.detach().clone() for a in args), buf, dynamo=False, opset_version=17,
                              input_names=names, output_names=["y"],
                              dynamic_axes={n: {0: "batch"} for n in [*names, "y"]})
        model = buf.getvalue()
        if path is not None:
            from pipeline.core.io import save_bytes

            save_bytes(path, model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ~20 sessions each keep a thread pool; spinning threads of one would starve the next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return OnnxNet(ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]), what)


def onnx_editor(editor, threads: int | None = None, cache: Path | None | bool = True):
    """`editor` (models.editor.Editor, fp32 on the CPU) with its networks run by ONNX Runtime,
    in place (a bf16 fusion net, `--dtype bf16-fusion`, stays in PyTorch); returns it.
    `threads`: ONNX Runtime's intra-op threads (None: torch's); `cache`: True for `cache_dir()`,
    a folder, or False/None to export every time."""
    from pipeline.models.networks import fuse_canvas

    require_onnx()
    if editor.device.type != "cpu" or editor.dtype != torch.float32 or editor.block_dtype is not None or \
            editor.fusion_dtype not in (None, torch.float32, torch.bfloat16):
        raise ValueError("--runtime onnx is the CPU fp32 path: use --device cpu --dtype fp32 (or bf16-fusion) with it "
                         f"(got {editor.device.type}, {editor.dtype}, fusion {editor.fusion_dtype}, "
                         f"residual blocks {editor.block_dtype})")
    # bf16-fusion: the fusion net stays a PyTorch module in bf16 (oneDNN's bf16 kernels on CPUs
    # with native bf16 beat ONNX Runtime's fp32 there); the part networks run by ONNX Runtime
    keep_fusion = editor.fusion_dtype == torch.bfloat16
    folder = cache_dir() if cache is True else (Path(cache) if cache else None)
    n = threads or torch.get_num_threads()
    prefix = editor.profile.name
    features = {}
    originals = {part: dict(mods) for part, mods in editor.parts.items()}  # parts may share one dict
    for part, (_, _, size) in editor.boxes.items():
        mods = originals[part]
        crop = torch.zeros(1, 3, size, size)
        with torch.no_grad():
            geometry = mods["image_encoder"](crop)
            code = mods["generator"].style(crop)
            features[part] = mods["generator"].feature(geometry, code)
        tag = f"{prefix}-{part}"
        generator = mods["generator"]
        editor.parts[part] = {
            **mods,  # the sketch decoder, when loaded, stays in PyTorch
            "image_encoder": _session(mods["image_encoder"], (crop,), f"{tag}-image_encoder", n, folder),
            "sketch_encoder": _session(mods["sketch_encoder"], (crop,), f"{tag}-sketch_encoder", n, folder),
            "generator": OnnxGenerator(_session(_Style(generator), (crop,), f"{tag}-style", n, folder),
                                       _session(_Decode(generator), (geometry, code), f"{tag}-decode", n, folder)),
        }
    if not keep_fusion:
        canvas = fuse_canvas(features, editor.boxes)
        editor.fusion = _session(editor.fusion, (canvas,), f"{prefix}-fusion", n, folder)
    editor.runtime = "onnx"
    return editor
