"""params.yaml access: the single source of truth for every stage's defaults.

CLI options default to None and fall back to the value here, so `dvc exp run -S key=value`
and `dfe <stage> --option` drive the same code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path(os.environ.get("DFE_PARAMS", "params.yaml"))


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    path = Path(path) if path is not None else PARAMS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: run dfe from the project root (where params.yaml lives) "
            "or set DFE_PARAMS to its path"
        )
    with open(path) as f:
        params = yaml.safe_load(f) or {}
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


def pick(value: Any, default: Any) -> Any:
    """CLI value if given, else the params.yaml default."""
    return default if value is None else value
