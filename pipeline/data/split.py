"""split: train/val/test by identity, seeded, so a person's photos never straddle two splits.

Choices (steps, alpha, thresholds) are made on `val`; `test` is only reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.io import save_csv


@dataclass(frozen=True)
class SplitConfig:
    """params.yaml `split:` (`seed` falls back to the top-level one)."""

    test_fraction: float = 0.2
    val_fraction: float = 0.0
    seed: int = 0
    train_identities: int = 0  # >0: train on only this many of the train identities (data-size studies)


def split_by_identity(manifest: pd.DataFrame, test_fraction: float, seed: int, val_fraction: float = 0.0,
                      train_identities: int = 0) -> pd.DataFrame:
    """Columns id, identity, split (train | val | test | unused). The test identities are the
    first of one seeded shuffle and val the next ones, so adding a val split leaves the test set
    as it was. At least one identity lands in test (and in val when asked) while train keeps
    one. `train_identities` > 0 keeps only the next that many for train and marks the rest
    `unused`: val and test stay the same people, so runs on 18, 36 and 72 people compare."""
    for name, f in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= f < 1.0 or (name == "test_fraction" and f == 0.0):
            raise ValueError(f"split.{name} must be in {'(0, 1)' if name == 'test_fraction' else '[0, 1)'}, got {f}")
    if test_fraction + val_fraction >= 1.0:
        raise ValueError(f"split.test_fraction + split.val_fraction must be < 1, got {test_fraction + val_fraction}")
    identities = np.array(sorted(manifest["identity"].astype(str).unique()))
    rng = np.random.default_rng(seed)
    rng.shuffle(identities)
    n = len(identities)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    if val_fraction > 0 and n - n_test >= 2:
        n_val = min(max(n_val, 1), n - n_test - 1)
    else:
        n_val = min(n_val, max(n - n_test - 1, 0))
    if train_identities < 0:
        raise ValueError(f"split.train_identities must be >= 0 (0 = all), got {train_identities}")
    test, val = set(identities[:n_test]), set(identities[n_test:n_test + n_val])
    rest = identities[n_test + n_val:]
    train = set(rest[:train_identities] if train_identities > 0 else rest)
    ident = manifest["identity"].astype(str)
    return pd.DataFrame({
        "id": manifest["id"],
        "identity": ident,
        "split": ["test" if i in test else "val" if i in val else "train" if i in train else "unused" for i in ident],
    })


def run_split(aligned_manifest: pd.DataFrame, test_fraction: float, seed: int, out_dir: Path,
              val_fraction: float = 0.0, train_identities: int = 0) -> pd.DataFrame:
    df = split_by_identity(aligned_manifest, test_fraction, seed, val_fraction, train_identities)
    save_csv(out_dir / "split.csv", df)
    return df
