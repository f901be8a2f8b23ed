"""split: train/test by identity, seeded, so a person's photos never straddle the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .io import save_csv


def split_by_identity(manifest: pd.DataFrame, test_fraction: float, seed: int) -> pd.DataFrame:
    """Columns id, identity, split. At least one identity lands in each split when there are two."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"split.test_fraction must be in (0, 1), got {test_fraction}")
    identities = np.array(sorted(manifest["identity"].astype(str).unique()))
    rng = np.random.default_rng(seed)
    rng.shuffle(identities)
    n_test = int(round(len(identities) * test_fraction))
    if len(identities) >= 2:
        n_test = min(max(n_test, 1), len(identities) - 1)
    test = set(identities[:n_test])
    return pd.DataFrame({
        "id": manifest["id"],
        "identity": manifest["identity"].astype(str),
        "split": ["test" if i in test else "train" for i in manifest["identity"].astype(str)],
    })


def run_split(aligned_manifest: pd.DataFrame, test_fraction: float, seed: int, out_dir: Path) -> pd.DataFrame:
    df = split_by_identity(aligned_manifest, test_fraction, seed)
    save_csv(out_dir / "split.csv", df)
    return df
