"""Training stages: `dfe train-sketch-ae --part eye1`, `train-image-encoder`, `train-local`, `train-fusion`.

Every option defaults to None and falls back to params.yaml: top-level `profile`, `seed`, `lr`
(so `dvc exp run -S lr=...` reaches every stage), the shared `train:` section (betas,
logging/checkpoint cadence, device, amp, augment) and the stage's own section
(`train_sketch_ae`, `train_image_encoder`, `train_local`, `train_fusion`: steps, batch_size,
lr_d, loss_weights; any shared key may be overridden there too).

`train.nproc` (or --nproc) > 1 relaunches the command under torchrun on that many processes
(pipeline.training.launch); it is not a stage param, the batch size is global.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from pipeline.core.config import load_params
from pipeline.core.progress import console

from .common import require_training_inputs

_SHARED = ("betas", "lr_decay", "log_every", "ckpt_every", "sample_every", "device", "amp", "augment",
           "components", "models_dir", "checkpoints_dir", "live_root")


# Keys of a stage's params section that go to its task (see the stage's command), not TrainConfig.
_TASK_KEYS = {"sketch_ae": ("freeze_encoder",)}


def _config(stage: str, part: str, overrides: dict[str, Any]):
    from pipeline.data.augment import AugmentConfig
    from pipeline.training.loop import TrainConfig

    params = load_params()
    shared = dict(params.get("train") or {})
    own = dict(params.get(f"train_{stage}") or {})
    for key in _TASK_KEYS.get(stage, ()):  # the task's own switches, not TrainConfig fields
        own.pop(key, None)
    values: dict[str, Any] = {k: shared[k] for k in _SHARED if k in shared}
    values.update({k: params[k] for k in ("profile", "seed", "lr") if k in params})
    values.update(own)
    augment = {**(shared.get("augment") or {}), **(own.get("augment") or {})}
    flag = overrides.pop("augment", None)
    if flag is not None:
        augment["enabled"] = flag
    values["augment"] = AugmentConfig(**augment)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise typer.BadParameter(f"params.yaml train_{stage} has unknown keys {sorted(unknown)}")
    return TrainConfig(stage=stage, part=part, **values)


def _spread(ctx: typer.Context, nproc: Optional[int], cfg) -> None:
    """Relaunch this command under torchrun when train.nproc (or --nproc) asks for more than
    one process; returns at once with one process and inside the torchrun workers."""
    from pipeline.training.launch import check_nproc, relaunch, under_torchrun

    from .common import fail

    if under_torchrun():
        return
    wanted = (load_params().get("train") or {}).get("nproc", 1) if nproc is None else nproc
    try:
        n = check_nproc(wanted, cfg.batch_size, cfg.device)
    except ValueError as e:
        fail(e)
    if n > 1:
        console.print(f"training on {n} processes (torchrun)")
        relaunch(n, ["-m", "stages.cli", *_command_line(ctx)])


def _command_line(ctx: typer.Context) -> list[str]:
    """This command's name and the options given to it, as parsed (not sys.argv, which is another
    program's when the app is called from Python); --nproc is left out."""
    args = [ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or param.name == "nproc" or param.param_type_name != "option":
            continue
        if param.is_flag:  # --amp/--no-amp
            args += [param.opts[0]] if value else param.secondary_opts[:1]
        else:
            args += [param.opts[0], str(value)]
    return args


def _report(result) -> None:
    from rich.table import Table

    from pipeline.core.progress import is_rank0

    if not is_rank0():  # one table, from rank 0
        return

    table = Table(title=f"trained {result.weights}", show_header=False)
    table.add_row("steps", f"{result.steps} (resumed from {result.resumed_from})")
    table.add_row("images/s", f"{result.images_per_s:.1f}" if result.steps_run else "- (already complete)")
    for k, v in result.losses.items():
        table.add_row(f"loss {k}", f"{v:.4f}")
    console.print(table)


def _opts(
    steps: Optional[int], batch_size: Optional[int], lr: Optional[float], seed: Optional[int],
    profile: Optional[str], device: Optional[str], amp: Optional[bool], augment: Optional[bool],
) -> dict[str, Any]:
    return {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "profile": profile,
            "device": device, "amp": amp, "augment": augment}


_PART = typer.Option(..., help="eye1 | eye2 | nose | mouth | bg")
_STEPS = typer.Option(None, help="total optimisation steps (params.yaml: train_<stage>.steps)")
_BATCH = typer.Option(None, help="global batch size, split over the processes (params.yaml: train_<stage>.batch_size)")
_LR = typer.Option(None, help="Adam learning rate (params.yaml: lr)")
_SEED = typer.Option(None, help="random seed (params.yaml: seed)")
_PROFILE = typer.Option(None, help="paper | small | micro (params.yaml: profile)")
_DEVICE = typer.Option(None, help="auto | cpu | cuda (params.yaml: train.device)")
_AMP = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on CUDA and bf16-capable CPUs (params.yaml: train.amp)")
_AUG = typer.Option(None, "--augment/--no-augment", help="kornia augmentations (params.yaml: train.augment.enabled)")
_NPROC = typer.Option(None, help="processes to train on (torchrun), one per GPU (params.yaml: train.nproc)")


def train_sketch_ae_cmd(
    ctx: typer.Context,
    part: str = _PART, steps: Optional[int] = _STEPS, batch_size: Optional[int] = _BATCH,
    lr: Optional[float] = _LR, seed: Optional[int] = _SEED, profile: Optional[str] = _PROFILE,
    device: Optional[str] = _DEVICE, amp: Optional[bool] = _AMP, augment: Optional[bool] = _AUG,
    nproc: Optional[int] = _NPROC,
    freeze_encoder: Optional[bool] = typer.Option(
        None, "--freeze-encoder/--no-freeze-encoder",
        help="train only D_sketch against the E_sketch already in MODELS/sketch_ae/<part>.safetensors, e.g. the "
             "authors' imported one; the encoder is written back unchanged (params.yaml: train_sketch_ae.freeze_encoder)"),
    models_dir: Optional[str] = typer.Option(None, "--models", help="weights folder (params.yaml: train.models_dir)"),
) -> None:
    """Stage 1: sketch autoencoder (E_sketch + D_sketch) of one part."""
    from pipeline.training.train_sketch_ae import train_sketch_ae

    from .common import fail

    own = load_params().get("train_sketch_ae") or {}
    freeze = bool(own.get("freeze_encoder", False)) if freeze_encoder is None else freeze_encoder
    cfg = _config("sketch_ae", part, {**_opts(steps, batch_size, lr, seed, profile, device, amp, augment),
                                      "models_dir": models_dir})
    require_training_inputs(cfg)
    _spread(ctx, nproc, cfg)
    try:
        result = train_sketch_ae(part, cfg, freeze_encoder=freeze)
    except (FileNotFoundError, ValueError) as e:  # no encoder to freeze, or one of another profile
        fail(e)
    _report(result)


def train_image_encoder_cmd(
    ctx: typer.Context,
    part: str = _PART, steps: Optional[int] = _STEPS, batch_size: Optional[int] = _BATCH,
    lr: Optional[float] = _LR, seed: Optional[int] = _SEED, profile: Optional[str] = _PROFILE,
    device: Optional[str] = _DEVICE, amp: Optional[bool] = _AMP, augment: Optional[bool] = _AUG,
    nproc: Optional[int] = _NPROC,
) -> None:
    """Stage 2: image encoder into the frozen sketch latent of one part."""
    from pipeline.training.train_image_encoder import train_image_encoder

    cfg = _config("image_encoder", part, _opts(steps, batch_size, lr, seed, profile, device, amp, augment))
    require_training_inputs(cfg)
    _spread(ctx, nproc, cfg)
    _report(train_image_encoder(part, cfg))


def train_local_cmd(
    ctx: typer.Context,
    part: str = _PART, steps: Optional[int] = _STEPS, batch_size: Optional[int] = _BATCH,
    lr: Optional[float] = _LR, seed: Optional[int] = _SEED, profile: Optional[str] = _PROFILE,
    device: Optional[str] = _DEVICE, amp: Optional[bool] = _AMP, augment: Optional[bool] = _AUG,
    nproc: Optional[int] = _NPROC,
) -> None:
    """Stage 3: local disentanglement (appearance encoder + part generator) of one part."""
    from pipeline.training.train_local import train_local

    cfg = _config("local", part, _opts(steps, batch_size, lr, seed, profile, device, amp, augment))
    require_training_inputs(cfg)
    _spread(ctx, nproc, cfg)
    _report(train_local(part, cfg))


def train_fusion_cmd(
    ctx: typer.Context,
    steps: Optional[int] = _STEPS, batch_size: Optional[int] = _BATCH,
    lr: Optional[float] = _LR, seed: Optional[int] = _SEED, profile: Optional[str] = _PROFILE,
    device: Optional[str] = _DEVICE, amp: Optional[bool] = _AMP, augment: Optional[bool] = _AUG,
    nproc: Optional[int] = _NPROC,
) -> None:
    """Stage 4: global fusion of all parts (local modules frozen)."""
    from pipeline.training.train_fusion import train_fusion

    cfg = _config("fusion", "fusion", _opts(steps, batch_size, lr, seed, profile, device, amp, augment))
    require_training_inputs(cfg)
    _spread(ctx, nproc, cfg)
    _report(train_fusion(cfg))
