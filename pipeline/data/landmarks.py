"""landmarks: 68-point iBUG landmarks per accepted photo, from dlib or face-alignment (FAN).

`auto` picks FAN when its weights are on disk (or a download is allowed) and dlib otherwise;
the backend used is recorded per photo. Several faces: the most confident is kept and the
count recorded. No face: the photo is listed with that reason, never dropped silently.
Landmarks are stored in the original photo's pixel coordinates.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from pipeline.core.io import ImageDecodeError, load_image, save_csv, save_npy
from pipeline.core.parallel import resolve_workers, thread_map
from pipeline.core.progress import track

FAN_WEIGHTS = ("2DFAN4-11f355bf06.pth.tar", "s3fd-619a316812.pth")


@dataclass(frozen=True)
class LandmarkConfig:
    backend: str = "auto"  # auto | dlib | fan
    detect_side: int = 512  # photos are decoded at about this short side for detection
    upsample: int = 0  # dlib detector upsampling (1 finds faces down to ~40 px, 4x slower)
    batch_size: int = 16  # photos per FAN detector batch (dlib works photo by photo)
    device: str = "auto"


@dataclass
class Detection:
    landmarks: np.ndarray  # (68, 2) float32, in the decoded image's pixels
    score: float
    n_faces: int


class LandmarkBackend(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> Detection | None: ...


def dlib_model_dir() -> Path:
    """The folder of dlib model files shipped by `face-recognition-models` (found without importing it)."""
    env = os.environ.get("DFE_DLIB_MODELS")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "dlib's landmark model is missing: pip install face-recognition-models "
            "(or set DFE_DLIB_MODELS to a folder with shape_predictor_68_face_landmarks.dat)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


_DLIB_LOADED: dict[tuple[str, str], object] = {}
_DLIB_LOCK = threading.Lock()


def dlib_model(kind: str, path: str | os.PathLike | None = None):
    """dlib's face detector ("detector") or a shape predictor ("shape_predictor", path), loaded
    once per process: the 68-point predictor takes ~0.7 s to read and the detector ~0.5 s to
    build, and a stage makes several backends and embedders. The predictor is read-only and
    shared (as DlibBackend.copy shares it); the detector keeps per-call state, so each caller
    gets a copy of its own (a pickle round trip, ~10 ms)."""
    import pickle

    import dlib

    if kind not in ("detector", "shape_predictor"):
        raise ValueError(f"unknown dlib model {kind!r}; choose detector or shape_predictor")
    key = (kind, str(path))
    with _DLIB_LOCK:
        if key not in _DLIB_LOADED:
            _DLIB_LOADED[key] = dlib.get_frontal_face_detector() if kind == "detector" else dlib.shape_predictor(str(path))
        model = _DLIB_LOADED[key]
    return model if kind == "shape_predictor" else pickle.loads(pickle.dumps(model))


class DlibBackend:
    name = "dlib"

    def __init__(self, upsample: int = 0):
        import dlib

        model = dlib_model_dir() / "shape_predictor_68_face_landmarks.dat"
        if not model.exists():
            raise FileNotFoundError(f"{model} missing: pip install face-recognition-models")
        self.detector = dlib_model("detector")
        self.predictor = dlib_model("shape_predictor", model)
        self.upsample = upsample
        self._dlib = dlib

    def copy(self) -> DlibBackend:
        """A backend for another thread: its own detector (copied through pickle, ~2 ms; building
        one takes ~1 s), sharing the read-only shape predictor."""
        import pickle

        twin = object.__new__(DlibBackend)
        twin.detector = pickle.loads(pickle.dumps(self.detector))
        twin.predictor, twin.upsample, twin._dlib = self.predictor, self.upsample, self._dlib
        return twin

    def detect(self, image: np.ndarray) -> Detection | None:
        rects, scores, _ = self.detector.run(image, self.upsample, 0.0)
        if len(rects) == 0:
            return None
        best = int(np.argmax(scores))
        shape = self.predictor(image, rects[best])
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return Detection(pts, float(scores[best]), len(rects))


def fan_weights_present() -> bool:
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    return all((hub / name).exists() for name in FAN_WEIGHTS)


class FanBackend:
    """face-alignment's FAN with its S3FD detector; downloads its weights on first use (online).

    `detect_batch` runs the detector on same-sized photos as one batch (the expensive part on
    a GPU), then FAN on the best face of each photo."""

    name = "fan"

    def __init__(self, device: str = "cpu", fa=None):
        if fa is None:
            import face_alignment

            fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device, face_detector="sfd")
        self.fa = fa

    def detect(self, image: np.ndarray) -> Detection | None:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[Detection | None]:
        import torch

        out: list[Detection | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(img.shape, []).append(i)
        for idx in by_shape.values():
            batch = torch.from_numpy(np.stack([images[i] for i in idx])).permute(0, 3, 1, 2).float()  # RGB 0-255
            for i, boxes in zip(idx, self.fa.face_detector.detect_from_batch(batch)):
                boxes = np.asarray(boxes, np.float64).reshape(-1, 5)  # x0, y0, x1, y1, score
                if len(boxes) == 0:
                    continue
                best = boxes[int(np.argmax(boxes[:, 4]))]
                lms = self.fa.get_landmarks_from_image(images[i], detected_faces=[best])
                if lms:
                    out[i] = Detection(np.asarray(lms[0], np.float32)[:, :2], float(best[4]), len(boxes))
        return out


def make_backend(cfg: LandmarkConfig) -> LandmarkBackend:
    """The configured backend; `auto` uses FAN only if its weights are already on disk."""
    if cfg.backend == "dlib" or (cfg.backend == "auto" and not fan_weights_present()):
        return DlibBackend(cfg.upsample)
    if cfg.backend in ("fan", "auto"):
        from pipeline.core.config import resolve_device

        return FanBackend(str(resolve_device(cfg.device)))  # face-alignment wants a string
    raise ValueError(f"landmarks.backend must be auto, dlib or fan, got {cfg.backend!r}")


def run_landmarks(
    cfg: LandmarkConfig, ingest_manifest: pd.DataFrame, out_dir: Path, backend: LandmarkBackend | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Detect landmarks for every accepted photo; write landmarks.npy (N,68,2) + manifest.csv.

    Photos are decoded on `workers` threads (None: $DFE_WORKERS or all cores). dlib detects
    on those threads too (one detector copy each); FAN detects `cfg.batch_size` photos at a
    time on its device while the next ones decode.
    """
    backend = backend or make_backend(cfg)
    accepted = list(ingest_manifest[ingest_manifest["status"] == "ok"].itertuples())
    local = threading.local()

    def decode(rec) -> tuple[dict, np.ndarray | None, float]:
        row = {"id": rec.id, "backend": backend.name, "n_faces": 0, "score": np.nan,
               "row": -1, "status": "ok", "reason": ""}
        try:
            image, scale = load_image(rec.path, draft_side=cfg.detect_side)
        except ImageDecodeError as e:  # broken mid-stream (ingest checks headers and ends) or changed since
            row.update(status="rejected", reason=str(e))
            return row, None, 1.0
        return row, image, scale

    def record(row: dict, det: Detection | None, scale: float) -> tuple[dict, np.ndarray | None]:
        if det is None:
            row.update(status="rejected", reason="no face found")
            return row, None
        row.update(n_faces=det.n_faces, score=det.score)
        return row, det.landmarks / scale

    def detect(rec) -> tuple[dict, np.ndarray | None]:
        row, image, scale = decode(rec)
        if image is None:
            return row, None
        if not hasattr(local, "backend"):  # detectors keep per-call state: one per thread
            local.backend = backend.copy() if hasattr(backend, "copy") else backend
        return record(row, local.backend.detect(image), scale)

    def detect_in_batches() -> Iterator[tuple[dict, np.ndarray | None]]:
        # Photos decode on threads while the device detects the previous batch.
        chunks = [accepted[i : i + cfg.batch_size] for i in range(0, len(accepted), cfg.batch_size)]
        with ThreadPoolExecutor(resolve_workers(workers)) as pool:
            pending = pool.map(decode, chunks[0]) if chunks else iter(())
            for c in range(len(chunks)):
                batch = list(pending)
                if c + 1 < len(chunks):
                    pending = pool.map(decode, chunks[c + 1])  # submitted now, decoded meanwhile
                ok = [k for k, (_, image, _) in enumerate(batch) if image is not None]
                found = dict(zip(ok, backend.detect_batch([batch[k][1] for k in ok])))
                for k, (row, image, scale) in enumerate(batch):
                    yield (row, None) if image is None else record(row, found[k], scale)

    description = f"landmarks ({backend.name})"
    if hasattr(backend, "detect_batch"):
        results = track(detect_in_batches(), description, total=len(accepted))
    else:
        results = thread_map(detect, accepted, description, resolve_workers(workers) if hasattr(backend, "copy") else 1)
    rows, points = [], []
    for row, pts in results:
        if pts is not None:
            row["row"] = len(points)
            points.append(pts)
        rows.append(row)
    df = pd.DataFrame(rows, columns=["id", "backend", "n_faces", "score", "row", "status", "reason"])
    arr = np.stack(points).astype(np.float32) if points else np.zeros((0, 68, 2), np.float32)
    save_npy(out_dir / "landmarks.npy", arr)
    save_csv(out_dir / "manifest.csv", df)
    return df


def detect_landmarks(faces: np.ndarray, backend, what: str | None) -> np.ndarray:
    """dlib 68-point landmarks (N,68,2) of aligned faces with `backend` (a DlibBackend, loaded
    once by the caller); NaN rows where no face is found. what=None: no progress bar (for a
    caller inside one)."""
    out = np.full((len(faces), 68, 2), np.nan)
    rows = range(len(faces))
    for i in track(rows, what) if what else rows:
        det = backend.detect(np.ascontiguousarray(faces[i]))
        if det is not None:
            out[i] = det.landmarks
    return out


