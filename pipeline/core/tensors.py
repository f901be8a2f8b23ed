"""Conversions between packed uint8 faces and the networks' [-1, 1] tensors."""

from __future__ import annotations

import numpy as np
import torch


def faces_to_tensor(faces: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B,R,R,3) uint8 -> (B,3,R,R) float in [-1,1] on `device`."""
    assert faces.ndim == 4 and faces.shape[3] == 3 and faces.dtype == np.uint8, (faces.shape, faces.dtype)
    # np.array copies: slices of a read-only memmap cannot back a tensor.
    return torch.from_numpy(np.array(faces)).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_faces(x: torch.Tensor) -> np.ndarray:
    """(B,3,R,R) in [-1,1] -> (B,R,R,3) uint8 on the CPU."""
    assert x.ndim == 4 and x.shape[1] == 3, x.shape
    return ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


