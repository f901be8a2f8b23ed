"""safetensors I/O for dicts of modules: one file, each module's tensors under '<name>.'."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from pipeline.core.io import atomic_path


def save_modules_safetensors(
    path: str | os.PathLike, modules: Mapping[str, nn.Module], metadata: Mapping[str, str] | None = None
) -> None:
    """Write every module's state_dict under '<name>.' into one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {}
    for name, module in modules.items():
        assert "." not in name, f"module names are prefixes and may not contain '.': {name!r}"
        for k, v in module.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().to("cpu").contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata or {}))


def load_modules_from_safetensors(
    path: str | os.PathLike,
    modules: Mapping[str, nn.Module],
    strict: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, list[str]]:
    """Load '<name>.*' tensors of `path` into `modules[name]`.

    strict: every module key must be present and nothing in the file may be left unused
    (raises KeyError/RuntimeError listing them). Non-strict loads what matches and returns
    {'missing': [...], 'unexpected': [...]} with full prefixed names.
    """
    from safetensors.torch import load_file

    tensors = load_file(str(path), device=str(device) if device is not None else "cpu")
    unused = sorted(k for k in tensors if k.split(".", 1)[0] not in modules)
    if strict and unused:
        raise KeyError(f"{path}: tensors for no requested module: {unused[:8]}{'...' if len(unused) > 8 else ''}")
    missing, unexpected = [], list(unused)
    for name, module in modules.items():
        state = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
        if strict and not state:
            raise KeyError(f"{path} holds no '{name}.*' tensors")
        result = module.load_state_dict(state, strict=strict)
        missing += [f"{name}.{k}" for k in result.missing_keys]
        unexpected += [f"{name}.{k}" for k in result.unexpected_keys]
    return {"missing": missing, "unexpected": unexpected}
