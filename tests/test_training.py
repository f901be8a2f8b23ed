"""The four training stages end to end on a synthetic components dir (micro widths, 128 px).

128 px rather than the micro profile's 64: at 64 px the eye and nose crops are 16 px, whose
1x1 latents instance norm cannot train on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline import PARTS
from pipeline.data.loader import synthetic_components
from pipeline.core.profiles import PROFILES
from pipeline.training.loop import NonFiniteLossError, TrainConfig

PROFILE = "micro128"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def test_profile():
    # One thread: these models are tiny, and two spinning OpenMP threads on a shared 2-core
    # machine run them ~10x slower. The SIGKILL test's child process gets the same setting,
    # so both sides of the resume comparison reduce in the same order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    PROFILES[PROFILE] = dataclasses.replace(PROFILES["micro"], name=PROFILE, resolution=128)
    yield
    del PROFILES[PROFILE]
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    return synthetic_components(tmp_path_factory.mktemp("components"), 128, n_train=12, n_test=4, seed=0)


def make_cfg(root: Path, components: Path, stage: str, part: str, **kw) -> TrainConfig:
    base = dict(
        profile=PROFILE, steps=3, batch_size=4, lr=1e-3, log_every=1, ckpt_every=2, sample_every=3,
        progress=False, components=str(components), models_dir=str(root / "models"),
        checkpoints_dir=str(root / "checkpoints"), live_root=str(root / "dvclive"),
    )
    base.update(kw)
    return TrainConfig(stage=stage, part=part, **base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, components):
    """All four stages, every part, a few steps each: the layout `dvc repro` produces."""
    from pipeline.training.train_fusion import train_fusion
    from pipeline.training.train_image_encoder import train_image_encoder
    from pipeline.training.train_local import train_local
    from pipeline.training.train_sketch_ae import train_sketch_ae

    root = tmp_path_factory.mktemp("run")
    for stage, fn in (("sketch_ae", train_sketch_ae), ("image_encoder", train_image_encoder),
                      ("local", train_local)):
        for part in PARTS:
            fn(part, make_cfg(root, components, stage, part))
    train_fusion(make_cfg(root, components, "fusion", "fusion", batch_size=2))
    return root


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _history(live: Path, metric: str) -> list[tuple[int, float]]:
    """(step, value) rows of a dvclive metric TSV."""
    lines = (live / "plots" / "metrics" / f"{metric}.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    i, j = head.index("step"), head.index(metric.split("/")[-1])
    return [(int(r.split("\t")[i]), float(r.split("\t")[j])) for r in lines[1:]]


def test_sketch_ae_learns_contour_drawings_when_landmarks_exist(tmp_path):
    """With data/aligned/landmarks.npy the stage-1 batches carry the faces' landmark line
    drawings (loss and val term `contour`, a sample-grid row); without it, or with weight 0,
    they are off and the run says so."""
    from pipeline.training.train_sketch_ae import train_sketch_ae

    comps = synthetic_components(tmp_path / "components", 128, n_train=8, n_test=2, n_val=2,
                                 aligned_dir=tmp_path / "aligned")
    on = make_cfg(tmp_path / "on", comps, "sketch_ae", "bg", aligned=str(tmp_path / "aligned"))
    r = train_sketch_ae("bg", on)
    assert set(r.losses) == {"l1", "contour"} and r.losses["contour"] > 0
    meta = json.loads(on.config_path.read_text())
    assert meta["contour_drawings"] is True and str(tmp_path / "aligned" / "landmarks.npy") in meta["inputs"]
    assert [s for s, _ in _history(on.live_dir, "val/contour")] == [3]
    off = make_cfg(tmp_path / "off", comps, "sketch_ae", "bg", aligned=str(tmp_path / "aligned"),
                   loss_weights={"contour": 0.0})
    assert set(train_sketch_ae("bg", off).losses) == {"l1"}
    missing = make_cfg(tmp_path / "missing", comps, "sketch_ae", "bg", aligned=str(tmp_path / "nowhere"))
    assert set(train_sketch_ae("bg", missing).losses) == {"l1"}
    assert json.loads(missing.config_path.read_text())["contour_drawings"] is False


def test_every_stage_logs_a_validation_loss_beside_its_training_loss(trained):
    """val/<term> rows at each sample step, on held-out (val split) faces; the terms are the
    stage's reconstruction losses."""
    want = {("sketch_ae", "eye1"): ["l1"], ("image_encoder", "nose"): ["act"],
            ("local", "mouth"): ["rec", "geo", "cycle"], ("fusion", None): ["l1"]}
    for (stage, part), terms in want.items():
        live = trained / "dvclive" / stage / (part or "")
        for term in terms:
            rows = _history(live, f"val/{term}")
            assert [s for s, _ in rows] == [3], (stage, term)  # sample_every=3 = the last step
            assert all(0 < v < 10 for _, v in rows), (stage, term, rows)
        summary = json.loads((live / "metrics.json").read_text())
        assert set(summary["val"]) == set(terms)


def test_every_stage_writes_its_outputs(trained):
    prefixes = {"sketch_ae": {"sketch_encoder", "sketch_decoder"}, "image_encoder": {"image_encoder"},
                "local": {"generator"}}
    for stage, want in prefixes.items():
        for part in PARTS:
            w = _weights(trained / "models" / stage / f"{part}.safetensors")
            assert {k.split(".")[0] for k in w} == want, (stage, part)
            meta = json.loads((trained / "models" / stage / f"{part}.json").read_text())
            assert meta["config"]["stage"] == stage and meta["profile"]["name"] == PROFILE
            ck = torch.load(trained / "checkpoints" / stage / f"{part}.pt", weights_only=True)
            assert ck["step"] == 3
            live = trained / "dvclive" / stage / part
            assert json.loads((live / "metrics.json").read_text())["step"] == 3
            assert (live / "plots" / "images" / "samples.png").stat().st_size > 0
    ck = torch.load(trained / "checkpoints" / "local" / "mouth.pt", weights_only=True)
    assert set(ck["modules"]) == {"generator", "discriminator"}  # D only in the resume file
    fusion = _weights(trained / "models" / "fusion" / "fusion.safetensors")
    assert fusion and all(k.startswith("fusion.") for k in fusion)
    metrics = json.loads((trained / "dvclive" / "fusion" / "metrics.json").read_text())
    assert metrics["loss"]["l1"] > 0
    # The perceptual loss runs exactly when the VGG-19 weights are on disk here, and says so.
    from pipeline.models.vgg import MissingWeightsError, vgg_weights_path

    has_vgg = vgg_weights_path().is_file()
    meta = json.loads((trained / "models" / "fusion" / "fusion.json").read_text())
    assert metrics["perceptual_available"] is has_vgg and meta["perceptual_available"] is has_vgg
    assert meta["perceptual_reason"] == ("" if has_vgg else str(MissingWeightsError(vgg_weights_path())))


def test_load_editor_composes_a_face(trained, components):
    from pipeline.data.loader import ComponentData
    from pipeline.models.editor import load_editor

    editor = load_editor(trained / "models", PROFILE)
    data = ComponentData(components, "test", PARTS)
    idx = torch.arange(2)
    photos = {p: data.photos(p, idx) for p in PARTS}
    sketches = {p: data.sketches(p, idx) for p in PARTS}
    geometry = {p: editor.parts[p]["sketch_encoder"](sketches[p]) for p in PARTS}
    face = editor.compose(geometry, photos)
    assert face.shape == (2, 3, 128, 128) and torch.isfinite(face).all()
    assert not any(p.requires_grad for p in editor.fusion.parameters())


def test_missing_upstream_names_the_command(tmp_path, components):
    from pipeline.models.editor import load_part_modules
    from pipeline.training.train_image_encoder import train_image_encoder

    with pytest.raises(FileNotFoundError, match=r"dvc repro train_sketch_ae@mouth.*dfe train-sketch-ae --part mouth"):
        train_image_encoder("mouth", make_cfg(tmp_path, components, "image_encoder", "mouth"))
    with pytest.raises(FileNotFoundError, match="dfe train-local --part nose"):
        load_part_modules(tmp_path, "nose", PROFILE, which=("generator",))


def test_swaps_differ_from_reconstructions(trained, components):
    from pipeline.data.loader import ComponentData
    from pipeline.models.editor import load_part_modules

    m = load_part_modules(trained / "models", "mouth", PROFILE, which=("image_encoder", "generator"))
    x = ComponentData(components, "test", ("mouth",), load_sketches=False).photos("mouth", torch.arange(4))
    with torch.no_grad():
        z = m["image_encoder"](x)
        rec, _ = m["generator"](z, x)
        rec_again, _ = m["generator"](z, x)
        swap, feat = m["generator"](z, x.roll(1, 0))
    assert torch.equal(rec, rec_again)
    assert (swap - rec).abs().mean() > 1e-3  # appearance reaches the output
    assert feat.shape == (4, PROFILES[PROFILE].ngf, 48, 48)


def test_sketch_ae_loss_falls(tmp_path, components):
    from pipeline.training.train_sketch_ae import train_sketch_ae

    cfg = make_cfg(tmp_path, components, "sketch_ae", "mouth", steps=30, batch_size=8, lr=2e-3,
                   log_every=5, ckpt_every=30, sample_every=30, augment={"enabled": False})
    train_sketch_ae("mouth", cfg)
    history = _history(tmp_path / "dvclive/sketch_ae/mouth", "loss/l1")
    assert [s for s, _ in history] == [5, 10, 15, 20, 25, 30]
    losses = [v for _, v in history]
    assert losses[-1] < 0.7 * losses[0], losses


def test_nan_guard_names_stage_step_and_term(tmp_path, components, monkeypatch):
    from pipeline.models import losses
    from pipeline.training.train_sketch_ae import train_sketch_ae

    real_l1, calls = losses.l1, []

    def poisoned(a, b):
        calls.append(1)
        out = real_l1(a, b)
        return out * float("nan") if len(calls) == 3 else out

    monkeypatch.setattr(losses, "l1", poisoned)
    cfg = make_cfg(tmp_path, components, "sketch_ae", "nose", steps=6)
    with pytest.raises(NonFiniteLossError, match=r"stage sketch_ae, part nose: non-finite loss at step 3: l1=nan"):
        train_sketch_ae("nose", cfg)
    assert not cfg.weights_path.exists()  # no final weights from a broken run


@pytest.mark.parametrize("stage", ["local", "fusion"])
def test_zero_adversarial_weights_never_run_the_discriminator(stage, tmp_path, trained, components, monkeypatch):
    """gan = fm = 0 is a plain reconstruction objective: no discriminator pass, no gan/d losses."""
    import shutil

    from pipeline.models import networks
    from pipeline.training.train_fusion import train_fusion
    from pipeline.training.train_local import train_local

    for s in ("image_encoder", "local"):
        shutil.copytree(trained / "models" / s, tmp_path / "models" / s)
    calls = []
    forward = networks.MultiScaleDiscriminator.forward
    monkeypatch.setattr(networks.MultiScaleDiscriminator, "forward",
                        lambda self, x: calls.append(x.shape) or forward(self, x))
    kw = dict(loss_weights={"gan": 0.0, "fm": 0.0}, batch_size=2)
    if stage == "local":
        result = train_local("mouth", make_cfg(tmp_path, components, "local", "mouth", **kw))
    else:
        result = train_fusion(make_cfg(tmp_path, components, "fusion", "fusion", **kw))
    assert calls == []
    assert not {"gan", "fm", "d"} & set(result.losses) and result.losses["g_total"] > 0
    calls.clear()  # the default weights do run it: the patch would see that
    if stage == "local":
        train_local("mouth", make_cfg(tmp_path / "gan", components, "local", "mouth", batch_size=2,
                                      models_dir=str(tmp_path / "models")))
    else:
        train_fusion(make_cfg(tmp_path / "gan", components, "fusion", "fusion", batch_size=2,
                              models_dir=str(tmp_path / "models")))
    assert calls


def _interrupt_on_call(monkeypatch, module, name: str, at: int) -> None:
    real, calls = getattr(module, name), []

    def wrapped(*a, **k):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapped)


def test_local_stage_resumes_exactly_after_interruption(tmp_path, trained, components, monkeypatch):
    """GAN stage, two optimisers, swap pairs, augmentation on: stop at step 6, resume from 4."""
    import shutil

    from pipeline.models import losses
    from pipeline.training.train_local import train_local

    for run in ("straight", "killed"):
        shutil.copytree(trained / "models" / "image_encoder", tmp_path / run / "models" / "image_encoder")
    kw = dict(steps=8, ckpt_every=4, lr_decay=0.5)  # the lr schedule resumes too
    train_local("mouth", make_cfg(tmp_path / "straight", components, "local", "mouth", **kw))
    with monkeypatch.context() as mp:
        _interrupt_on_call(mp, losses, "lsgan_d_loss", at=6)  # inside step 6
        with pytest.raises(KeyboardInterrupt):
            train_local("mouth", make_cfg(tmp_path / "killed", components, "local", "mouth", **kw))
    result = train_local("mouth", make_cfg(tmp_path / "killed", components, "local", "mouth", **kw))
    assert result.resumed_from == 4 and result.steps_run == 4
    a = _weights(tmp_path / "straight/models/local/mouth.safetensors")
    b = _weights(tmp_path / "killed/models/local/mouth.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The metrics history has no duplicate steps from the lost part of the run.
    history = _history(tmp_path / "killed/dvclive/local/mouth", "loss/d")
    assert [s for s, _ in history] == list(range(1, 9))


def test_sketch_ae_resumes_exactly_after_sigkill(tmp_path, components):
    """A real SIGKILL of a training process mid-run; rerunning ends with the straight run's weights."""
    from pipeline.training.train_sketch_ae import train_sketch_ae

    kw = dict(steps=40, ckpt_every=4, log_every=4, sample_every=40)
    killed_root = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import dataclasses
        from pathlib import Path
        from pipeline.core.profiles import PROFILES
        PROFILES[{PROFILE!r}] = dataclasses.replace(PROFILES["micro"], name={PROFILE!r}, resolution=128)
        import tests.test_training as t
        from pipeline.training.train_sketch_ae import train_sketch_ae
        train_sketch_ae("mouth", t.make_cfg(Path({str(killed_root)!r}), Path({str(components)!r}),
                        "sketch_ae", "mouth", **{kw!r}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = killed_root / "checkpoints/sketch_ae/mouth.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    cfg = make_cfg(killed_root, components, "sketch_ae", "mouth", **kw)
    assert not cfg.weights_path.exists()
    resumed = train_sketch_ae("mouth", cfg)
    assert 0 < resumed.resumed_from < 40
    train_sketch_ae("mouth", make_cfg(tmp_path / "straight", components, "sketch_ae", "mouth", **kw))
    a = _weights(tmp_path / "straight/models/sketch_ae/mouth.safetensors")
    b = _weights(cfg.weights_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_changed_params_do_not_resume_a_stale_checkpoint(tmp_path, components):
    from pipeline.training.train_sketch_ae import train_sketch_ae

    first = train_sketch_ae("mouth", make_cfg(tmp_path, components, "sketch_ae", "mouth"))
    again = train_sketch_ae("mouth", make_cfg(tmp_path, components, "sketch_ae", "mouth", steps=5))
    assert first.resumed_from == 0 and again.resumed_from == 3 and again.steps_run == 2  # train longer
    other = train_sketch_ae("mouth", make_cfg(tmp_path, components, "sketch_ae", "mouth", lr=5e-4, steps=5))
    assert other.resumed_from == 0 and other.steps_run == 5


def test_lr_decays_linearly_to_the_last_step_and_makes_steps_part_of_the_run(tmp_path, components):
    from pipeline.training.train_sketch_ae import train_sketch_ae

    cfg = make_cfg(tmp_path, components, "sketch_ae", "mouth", steps=10, lr_decay=0.4)
    assert [cfg.lr_factor(s) for s in range(10)] == pytest.approx([1] * 6 + [1.0, 0.75, 0.5, 0.25])
    assert make_cfg(tmp_path, components, "sketch_ae", "mouth", steps=10).lr_factor(9) == 1.0
    with pytest.raises(ValueError, match="lr_decay"):
        make_cfg(tmp_path, components, "sketch_ae", "mouth", lr_decay=1.5)
    train_sketch_ae("mouth", make_cfg(tmp_path, components, "sketch_ae", "mouth", steps=4, lr_decay=0.5))
    groups = torch.load(tmp_path / "checkpoints/sketch_ae/mouth.pt", weights_only=False)["optimizers"]
    lrs = [g["lr"] for o in groups.values() for g in o["param_groups"]]
    assert lrs and all(lr == pytest.approx(1e-3 * 0.5) for lr in lrs)  # the last step ran at 1/2
    # A longer run decays on another schedule, so it starts afresh instead of resuming.
    longer = train_sketch_ae("mouth", make_cfg(tmp_path, components, "sketch_ae", "mouth", steps=6, lr_decay=0.5))
    assert longer.resumed_from == 0 and longer.steps_run == 6


def test_rerun_of_a_finished_stage_keeps_its_recorded_speed(tmp_path, components):
    """`dvc repro` after a code change reruns a finished stage, which resumes at its last step
    and runs nothing: its metrics keep the speed measured when it trained, not 0."""
    from pipeline.training.train_sketch_ae import train_sketch_ae

    cfg = make_cfg(tmp_path, components, "sketch_ae", "mouth")
    first = train_sketch_ae("mouth", cfg)
    speed = json.loads((cfg.live_dir / "metrics.json").read_text())["images_per_s"]
    again = train_sketch_ae("mouth", cfg)
    assert first.steps_run == 3 and again.steps_run == 0 and again.resumed_from == 3
    assert speed > 0 and json.loads((cfg.live_dir / "metrics.json").read_text())["images_per_s"] == speed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stage", ["sketch_ae", "local"])
def test_ddp_world_size_one_matches_single_process(stage, tmp_path, trained, components, monkeypatch):
    """The torchrun code path (gloo, DistributedDataParallel) gives the single-process weights."""
    import shutil

    import torch.distributed as dist

    from pipeline.training.train_local import train_local
    from pipeline.training.train_sketch_ae import train_sketch_ae
    from pipeline.training.loop import Trainer

    fn = {"sketch_ae": train_sketch_ae, "local": train_local}[stage]
    for run in ("plain", "ddp"):
        shutil.copytree(trained / "models" / "image_encoder", tmp_path / run / "models" / "image_encoder")
    fn("mouth", make_cfg(tmp_path / "plain", components, stage, "mouth"))
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    wrapped = []
    real_wrap = Trainer.wrap

    def spy(self, module):
        wrapped.append(real_wrap(self, module))
        return wrapped[-1]

    monkeypatch.setattr(Trainer, "wrap", spy)
    fn("mouth", make_cfg(tmp_path / "ddp", components, stage, "mouth"))
    assert wrapped and all(type(w).__name__ == "DistributedDataParallel" for w in wrapped)
    assert not dist.is_initialized()  # the trainer tore down the group it made
    a = _weights(tmp_path / f"plain/models/{stage}/mouth.safetensors")
    b = _weights(tmp_path / f"ddp/models/{stage}/mouth.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
