"""params.yaml access: the single source of truth for every stage's defaults.

CLI options default to None and fall back to the value here, so `dvc exp run -S key=value`
and `dfe <stage> --option` drive the same code.

Inside a project (the working folder has a params.yaml, or $DFE_PARAMS names one) that file is
read. Anywhere else the built-in defaults are: pipeline/default_params.yaml, a copy of the
project's params.yaml shipped with the package (tests/test_cli.py checks the two agree), so
`dfe edit` and `dfe sketch` work from any folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

# The built-in defaults: a copy of params.yaml (`cp params.yaml pipeline/default_params.yaml`).
DEFAULTS_FILE = Path(__file__).resolve().parents[1] / "default_params.yaml"

# Set (tests, notebooks) to read that file whatever the working folder; None: look for one.
PARAMS_FILE: Path | None = None


def params_file() -> Path | None:
    """The project's params file: PARAMS_FILE when set, else $DFE_PARAMS, else ./params.yaml
    when there is one; None outside a project."""
    if PARAMS_FILE is not None:
        return Path(PARAMS_FILE)
    env = os.environ.get("DFE_PARAMS")
    if env:
        return Path(env)
    local = Path("params.yaml")
    return local if local.is_file() else None


def params_source() -> str:
    """What load_params() reads, for messages: a path, or the built-in defaults."""
    path = params_file()
    return str(path) if path is not None else f"built-in defaults ({DEFAULTS_FILE.name})"


def load_defaults() -> dict[str, Any]:
    """The built-in defaults (a fresh dict each call)."""
    return _read(DEFAULTS_FILE)


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """`path`, else the project's params file (see params_file), else the built-in defaults."""
    path = Path(path) if path is not None else params_file()
    if path is None:
        return load_defaults()
    if not path.exists():
        named = " ($DFE_PARAMS)" if os.environ.get("DFE_PARAMS") == str(path) else ""
        raise FileNotFoundError(f"{path}{named} not found: point DFE_PARAMS at a params.yaml, or unset it")
    return _read(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            params = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return params


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """A stage's section, with a clear error naming the missing key."""
    try:
        value = params[name]
    except KeyError:
        raise KeyError(f"params.yaml has no '{name}' section") from None
    return dict(value or {})


def resolve_device(device: str):
    """A torch.device for a params/CLI device string; "auto" is CUDA when available, else CPU."""
    import torch  # here, not at the top: params access must not pay for torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def synchronize(device) -> None:
    """Wait for queued CUDA work on `device` (so a timer reads the real time); no-op elsewhere."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16"}
# Only the fusion net in bf16, the part nets in fp32: on CPUs with native bf16 a third less time
# per 512 px render at ~43 dB from fp32 (python -m benchmarks.dtype), where all-bf16 gives ~34 dB.
FUSION_ONLY = "bf16-fusion"
# The fusion net and the part nets' residual blocks in bf16, the rest of the part nets fp32: on
# CPUs with native bf16 (AMX) under half of fp32's time per 512 px render at ~41 dB from fp32
# (python -m benchmarks.dtype; the stems, down/up-sampling and heads are the sensitive layers).
MIXED = "bf16-mixed"


def resolve_dtype(dtype: str, device) -> Any:
    """The inference torch.dtype for a params/CLI string: bf16 | fp32, or "auto" (fp32: on CUDA
    "auto" is bf16-fusion, whose part nets are fp32; a CPU runs bf16 fast only with native
    support, and fp32 is the reference). bf16-fusion: fp32 here, the fusion net's own dtype comes
    from `resolve_fusion_dtype`; bf16-mixed: fp32 here too, with `resolve_block_dtype`."""
    import torch

    if dtype in ("auto", FUSION_ONLY, MIXED):
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, bf16, {FUSION_ONLY}, {MIXED} or fp32")
    return getattr(torch, DTYPES[dtype])


def resolve_fusion_dtype(dtype: str, device) -> Any:
    """The fusion net's torch.dtype for the same string: bf16 for bf16-fusion and for "auto" on
    CUDA, else None (the editor's own). On an H200 a 512 px render took 0.75x fp32's time at
    42.9 dB from it with the fusion net alone in bf16, 0.93x at 34.3 dB with every net in bf16
    (benchmarks/gpu_check.sh): at one face per render the GPU waits on kernel launches, so bf16
    buys little beyond the fusion net's large convolutions."""
    import torch

    resolve_dtype(dtype, device)  # the same check of the name
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else None
    return torch.bfloat16 if dtype in (FUSION_ONLY, MIXED) else None


def resolve_block_dtype(dtype: str, device) -> Any:
    """The part nets' residual blocks' torch.dtype (models.editor.Editor.cast_blocks) for the same
    string: bf16 for bf16-mixed, else None (the editor's own)."""
    import torch

    resolve_dtype(dtype, device)
    return torch.bfloat16 if dtype == MIXED else None


def resolve_dtypes(dtype: str, device) -> tuple[Any, Any, Any]:
    """The params/CLI string as (the editor's dtype, the fusion net's, the residual blocks'):
    what load_editor takes as dtype, fusion_dtype and block_dtype."""
    return resolve_dtype(dtype, device), resolve_fusion_dtype(dtype, device), resolve_block_dtype(dtype, device)


def native_bf16(device) -> bool:
    """Whether bf16 runs natively on `device`: CUDA, or a CPU with avx512_bf16 or AMX. Other CPUs
    emulate it: with oneDNN held to AVX2 a 3x3 convolution (256 channels, 64 px) took 3.5x
    fp32's time in bf16 on the Xeon of the README, against 0.04x with its AMX."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe is not None and probe()) or (amx is not None and amx()))


def emulated_bf16_warning(dtype: str, device) -> str | None:
    """One line for the user where the params/CLI `dtype` puts networks in bf16 on a device that
    only emulates it (slower than fp32, not faster); None where it does not."""
    import torch

    if torch.bfloat16 not in resolve_dtypes(dtype, device) or native_bf16(device):
        return None
    return (f"--dtype {dtype}: this CPU has no native bf16 (avx512_bf16 or AMX), so bf16 is emulated and "
            "slower than fp32; --dtype fp32 (or --runtime onnx in the studio) is the fast path here")


def pick(value: Any, default: Any) -> Any:
    """CLI value if given, else the params.yaml default."""
    return default if value is None else value
