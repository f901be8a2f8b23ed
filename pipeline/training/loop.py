"""One training loop for the four DeepFaceEditing stages.

A stage describes *what* to train as a `Task` (its modules, optimisers, sampler, how to draw
a batch, one optimisation step, a sample grid, what to export); `Trainer.fit` owns *how*:
device choice, seeding, DDP under torchrun, bf16 autocast (CUDA, and CPUs with native bf16), the NaN/inf guard,
resumable checkpoints, dvclive logging, a rich progress bar and the data/model/logging time
split that `benchmarks/train.py` reports.

Checkpoints are one file per run (`checkpoints/<stage>/<part>.pt`): module and optimiser
state, step, resolved config, a fingerprint of config and inputs, and every RNG state
(python, numpy, torch CPU/CUDA of every rank, the sampler's generator), so a killed CPU run
that is started again on as many processes ends with exactly the weights of an uninterrupted
one.

Under DDP `batch_size` is the global batch: the sampler hands each rank its slice of the
batch one process would draw, gradients and logged losses are averaged over the ranks, and
only rank 0 writes (weights, checkpoints, dvclive). So the number of processes is not part
of a run: a checkpoint resumes on any number that divides the batch. A checkpoint whose
fingerprint differs (other params, data or upstream weights) is ignored, not resumed:
with `persist: true` in dvc.yaml a stale checkpoint must never leak into a new experiment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pipeline.data.augment import AugmentConfig
from pipeline.data.loader import IndexSampler
from pipeline.core.config import native_bf16
from pipeline.core.io import atomic_path, save_json
from pipeline.core.progress import console, make_progress

STAGES = ("sketch_ae", "image_encoder", "local", "fusion")

# Config fields that may change between a run and its resumption without invalidating it.
_VOLATILE = frozenset({
    "steps", "log_every", "ckpt_every", "sample_every", "device", "progress",
    "timing_sync", "components", "aligned", "models_dir", "checkpoints_dir", "live_root",
})


@dataclass
class TrainConfig:
    stage: str
    part: str  # a part name, or "fusion" for the global stage
    profile: str = "small"
    steps: int = 1000
    batch_size: int = 8  # global; under DDP each of N processes trains on batch_size / N
    lr: float = 2e-4
    lr_d: float | None = None  # discriminator lr; None = lr
    # Fraction of the run, at its end, over which every optimiser's lr falls linearly to ~0
    # (pix2pixHD's niter_decay, for long runs; on the small profile's short CPU runs it did
    # not help, see the README).
    lr_decay: float = 0.0
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    sample_every: int = 200
    device: str = "auto"  # auto: cuda:LOCAL_RANK when available, else cpu
    amp: bool = True  # bf16 autocast on CUDA, and on CPUs with native bf16 (avx512_bf16/AMX)
    progress: bool = True
    timing_sync: bool = False  # cuda.synchronize at phase boundaries for exact timing splits
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss_weights: dict[str, float] = field(default_factory=dict)
    components: str = "data/components"
    aligned: str = "data/aligned"  # landmarks.npy: the sketch AE's contour drawings
    models_dir: str = "models"
    checkpoints_dir: str = "checkpoints"
    live_root: str = "dvclive"

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; expected one of {STAGES}")
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "sample_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= float(self.lr_decay) <= 1.0:
            raise ValueError(f"lr_decay must be in [0, 1] (a fraction of the steps), got {self.lr_decay}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base lr for the step that follows `step` completed steps."""
        decay = round(self.lr_decay * self.steps)
        return 1.0 if decay < 1 else min(1.0, (self.steps - step) / decay)

    @property
    def weights_path(self) -> Path:
        return Path(self.models_dir) / self.stage / f"{self.part}.safetensors"

    @property
    def config_path(self) -> Path:
        return Path(self.models_dir) / self.stage / f"{self.part}.json"

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.checkpoints_dir) / self.stage / f"{self.part}.pt"

    @property
    def live_dir(self) -> Path:
        root = Path(self.live_root) / self.stage
        return root if self.stage == "fusion" else root / self.part

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf; the message names stage, part, step and term."""


class Task(Protocol):
    """What a stage trains. `modules` are checkpointed; `export()` is saved as safetensors."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    sampler: IndexSampler

    def next_batch(self) -> Any: ...

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]: ...

    def sample_grid(self) -> np.ndarray: ...

    def validation_losses(self) -> dict[str, torch.Tensor]: ...  # on fixed val faces, no augmentation

    def export(self) -> dict[str, nn.Module]: ...

    def summary(self) -> dict[str, Any]: ...


@dataclass
class TrainResult:
    steps: int  # final step
    steps_run: int  # steps executed in this call (0 when the checkpoint was already complete)
    resumed_from: int
    seconds: dict[str, float]  # data (incl. augmentation), model (forward/backward/step), log
    images_per_s: float
    losses: dict[str, float]  # mean of each term over the last logging window
    weights: Path


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # this trainer initialised the process group and tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.owns_group or dist.is_initialized()


def setup_distributed(device: str = "auto") -> DistInfo:
    """Device choice plus process-group setup when launched by torchrun (RANK/WORLD_SIZE set)."""
    env = os.environ
    launched = "RANK" in env and "WORLD_SIZE" in env
    rank = int(env.get("RANK", 0)) if launched else 0
    world = int(env.get("WORLD_SIZE", 1)) if launched else 1
    local_rank = int(env.get("LOCAL_RANK", 0)) if launched else 0
    if device == "auto":
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        # A stage's shapes are fixed, so cuDNN's timed choice of kernels is made once per shape:
        # about 0.7x the step time of the mouth's local stage at 512 px on an H200 (benchmarks/gpu_check.sh).
        torch.backends.cudnn.benchmark = True
    owns = False
    if launched and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistInfo(rank, world, local_rank, dev, owns)


def bf16_autocast_pays(device: torch.device) -> bool:
    """CUDA always; a CPU only with native bf16 (avx512_bf16 or AMX): there autocast roughly
    halves a small-profile training step (sketch AE bg, batch 8: 160 -> 86 ms on 2 EPYC
    cores), while CPUs without it emulate bf16 and get slower."""
    return native_bf16(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def file_digest(path: str | os.PathLike, full_below: int = 64 << 20, block: int = 1 << 16) -> str:
    """sha256 of a file; files above `full_below` bytes hash their size and 64 spread blocks
    (enough to notice regenerated data or retrained upstream weights, cheap on 25 GB arrays)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= full_below:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            for i in range(64):
                f.seek((size - block) * i // 63)
                h.update(f.read(block))
    return h.hexdigest()


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_rng_to_tuple(state: Any) -> Any:
    """random.getstate() nests tuples; torch.load(weights_only) may hand back lists."""
    return tuple(_python_rng_to_tuple(s) for s in state) if isinstance(state, (list, tuple)) else state


def _truncate_live_history(live_dir: Path, after_step: int) -> None:
    """Drop metric rows past the resume step (they were logged before the kill and get redone)."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        head, rows = lines[0], lines[1:]
        col = head.split("\t").index("step") if "step" in head.split("\t") else None
        if col is None:
            continue
        kept = [r for r in rows if int(r.split("\t")[col]) <= after_step]
        with atomic_path(tsv) as tmp:
            tmp.write_text("\n".join([head, *kept]) + "\n")


class Trainer:
    """Runs a Task: see the module docstring. Build it before the task (it seeds and picks the device)."""

    def __init__(self, cfg: TrainConfig, inputs: list[str | os.PathLike] | None = None) -> None:
        self.cfg = cfg
        self.dist = setup_distributed(cfg.device)
        self.device = self.dist.device
        self.amp = cfg.amp and bf16_autocast_pays(self.device)
        seed_everything(cfg.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
        self.inputs = [Path(p) for p in (inputs or [])]
        self.fingerprint = self._fingerprint()
        self.timers: dict[str, float] = defaultdict(float)

    # -- helpers the tasks use -------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast (no grad scaler needed for bf16); a no-op where bf16 does not pay."""
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel under torchrun, the module itself otherwise.

        Tasks run every trainable forward through the wrapper (so gradients are averaged across
        ranks) and call frozen or discriminator-as-loss passes on the raw module.
        """
        if not self.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids)

    def adam(self, *modules: nn.Module, lr: float | None = None) -> torch.optim.Adam:
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.cfg.lr if lr is None else lr, betas=self.cfg.betas)

    # -- fingerprint and checkpoints -------------------------------------------------------
    def _fingerprint(self) -> str:
        # With lr decay the schedule depends on the step count: a longer run is another run.
        volatile = _VOLATILE - {"steps"} if self.cfg.lr_decay > 0 else _VOLATILE
        cfg = {k: v for k, v in self.cfg.to_dict().items() if k not in volatile}
        h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
        for p in self.inputs:
            h.update(str(p.name).encode())
            h.update(file_digest(p).encode())
        return h.hexdigest()

    def save_checkpoint(self, task: Task, step: int) -> None:
        """Rank 0 writes; every rank must call it (each hands in its own RNG streams)."""
        if self.dist.enabled:
            rngs = [None] * self.dist.world_size if self.is_main else None
            dist.gather_object(_rng_state(), rngs, dst=0)
        else:
            rngs = [_rng_state()]
        if not self.is_main:
            return
        state = {
            "modules": {k: m.state_dict() for k, m in task.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in task.optimizers.items()},
            "step": step,
            "config": self.cfg.to_dict(),
            "fingerprint": self.fingerprint,
            "rng": rngs,  # one per rank
            "sampler": task.sampler.state_dict(),
        }
        with atomic_path(self.cfg.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self, task: Task) -> int:
        """Restore a matching checkpoint; return its step (0 when starting fresh)."""
        path = self.cfg.checkpoint_path
        if not path.exists():
            return 0
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != self.fingerprint:
            if self.is_main:
                console.print(
                    f"[yellow]{path}: made with other params, data or upstream weights; "
                    "starting from step 0[/yellow]"
                )
            return 0
        for k, m in task.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in task.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        step = int(state["step"])
        task.sampler.load_state_dict(state["sampler"])  # the same stream on every rank
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # older: one process
        if self.dist.rank < len(rngs):
            rng = rngs[self.dist.rank]
            rng["python"] = _python_rng_to_tuple(rng["python"])
            _set_rng_state(rng)
        else:  # a checkpoint of fewer processes: this rank starts a stream of its own
            self._own_stream(step)
        return step

    def _own_stream(self, step: int) -> None:
        """Ranks > 0 leave the shared seed for RNG streams of their own (augmentations): with
        the one seed, every rank would draw the same transforms for its different faces.
        Rank 0 keeps the single-process stream."""
        if self.dist.rank > 0:
            seed_everything(int(np.random.SeedSequence([self.cfg.seed, step, self.dist.rank]).generate_state(1)[0]))

    # -- the loop --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        if self.cfg.timing_sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timers[name] += time.perf_counter() - t0

    def _global_losses(self, terms: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """The loss terms averaged over the ranks: the global batch's losses, as one process
        with the whole batch logs them. A NaN/inf on any rank stays one in the sum, so every
        rank stops at the same step."""
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        if self.dist.enabled:
            dist.all_reduce(values)
            values /= self.dist.world_size
        if not torch.isfinite(values).all():
            bad = [f"{k}={v:.4g}" for k, v in zip(terms, values.tolist()) if not np.isfinite(v)]
            where = f"stage {self.cfg.stage}" + ("" if self.cfg.part == "fusion" else f", part {self.cfg.part}")
            raise NonFiniteLossError(
                f"{where}: non-finite loss at step {step}: {', '.join(bad)} "
                f"(last good checkpoint: {self.cfg.checkpoint_path}; lower the lr or check the inputs)"
            )
        return values

    def _open_live(self, resumed_from: int):
        from dvclive import Live

        live_dir = self.cfg.live_dir
        if resumed_from > 0 and live_dir.exists():
            _truncate_live_history(live_dir, resumed_from)
        # dvcyaml=False: metrics and plots are declared in the project's dvc.yaml; experiments
        # are saved by `dvc exp run` itself, never by dvclive (save_dvc_exp=False).
        # The resolved config goes beside the weights (models/<stage>/<part>.json), not here.
        return Live(str(live_dir), resume=resumed_from > 0, save_dvc_exp=False, dvcyaml=False)

    def fit(self, task: Task) -> TrainResult:
        cfg = self.cfg
        start = self.load_checkpoint(task)
        if start == 0:
            self._own_stream(0)
        if self.dist.enabled:
            starts: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(starts, start)
            if len(set(starts)) > 1:  # ranks at different steps would wait on each other forever
                raise RuntimeError(
                    f"{cfg.checkpoint_path}: ranks would resume from steps {starts}; with several "
                    "nodes, checkpoints_dir must be on storage that every node shares"
                )
        live = self._open_live(start) if self.is_main else None
        window: torch.Tensor | None = None
        window_n = 0
        last: dict[str, float] = {}
        step = start
        progress = make_progress() if (cfg.progress and self.is_main) else None
        t_start = time.perf_counter()
        finished = False
        try:
            with progress if progress is not None else contextlib.nullcontext():
                bar = None
                if progress is not None:
                    label = cfg.stage if cfg.part == "fusion" else f"{cfg.stage}/{cfg.part}"
                    bar = progress.add_task(f"train {label}", total=cfg.steps, completed=step)
                while step < cfg.steps:
                    self._set_lr(task, step)
                    with self._timed("data"):
                        batch = task.next_batch()
                    with self._timed("model"):
                        terms = task.train_step(batch)
                        values = self._global_losses(terms, step + 1)
                    step += 1
                    window = values if window is None else window + values
                    window_n += 1
                    with self._timed("log"):
                        if step % cfg.log_every == 0 or step == cfg.steps:
                            last = {k: v / window_n for k, v in zip(terms, window.tolist())}
                            window, window_n = None, 0
                            if live is not None:
                                live.step = step
                                for k, v in last.items():
                                    live.log_metric(f"loss/{k}", v)
                                live.make_summary()
                        if live is not None and (step % cfg.sample_every == 0 or step == cfg.steps):
                            with torch.no_grad(), self.autocast():
                                grid = task.sample_grid()
                                val = {k: float(v) for k, v in task.validation_losses().items()}
                            live.log_image("samples.png", grid)
                            for k, v in val.items():  # beside loss/<k>: would more steps help?
                                live.log_metric(f"val/{k}", v)
                            if val:
                                live.make_summary()
                        if step % cfg.ckpt_every == 0 and step < cfg.steps:
                            self.save_checkpoint(task, step)
                        if bar is not None:
                            progress.update(bar, completed=step)
            wall = time.perf_counter() - t_start
            steps_run = step - start
            self.save_checkpoint(task, step)
            self.export(task)
            if live is not None:
                # Metrics stay numeric (dvc metrics show); text notes live in the JSON beside the weights.
                live.summary.update({k: v for k, v in task.summary().items() if isinstance(v, (bool, int, float))})
                if steps_run:  # a run resumed at its last step keeps the speed it recorded
                    live.summary["images_per_s"] = cfg.batch_size * steps_run / max(wall, 1e-9)
                live.end()
            finished = True
        finally:
            if self.dist.owns_group:
                if finished:  # after a failure on one rank the others may never get here
                    dist.barrier()
                dist.destroy_process_group()
        return TrainResult(
            steps=step, steps_run=steps_run, resumed_from=start, seconds=dict(self.timers),
            images_per_s=cfg.batch_size * steps_run / max(wall, 1e-9) if steps_run else 0.0,
            losses=last, weights=cfg.weights_path,
        )

    def _set_lr(self, task: Task, step: int) -> None:
        factor = self.cfg.lr_factor(step)
        for opt in task.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("base_lr", group["lr"])  # saved with the optimiser: resumes exactly
                group["lr"] = group["base_lr"] * factor

    def export(self, task: Task) -> None:
        """Write the task's weights and their JSON (rank 0 only): what later stages load."""
        if not self.is_main:
            return
        from pipeline.models.weights import save_modules_safetensors

        save_modules_safetensors(self.cfg.weights_path, task.export())
        from pipeline.core.profiles import get_profile

        save_json(self.cfg.config_path, {
            "config": self.cfg.to_dict(),
            "profile": get_profile(self.cfg.profile).to_dict(),
            "fingerprint": self.fingerprint,
            "inputs": [str(p) for p in self.inputs],
            **task.summary(),
        })
