"""Trainer building blocks: data access, sampler, augmentations, config and fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.augment import AugmentConfig, Augmenter
from pipeline.data.loader import ComponentData, IndexSampler, synthetic_components
from pipeline.core.profiles import part_boxes
from pipeline.training.loop import TrainConfig, file_digest


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    return synthetic_components(tmp_path_factory.mktemp("comp"), 128, n_train=10, n_test=3, seed=1)


def test_component_data_batches_keep_order_and_range(components):
    data = ComponentData(components, "train", ("mouth", "bg"))
    assert len(data) == 10 and data.size("mouth") == part_boxes(128)["mouth"][2]
    idx = torch.tensor([7, 2, 7, 0])
    photos = data.photos("mouth", idx)
    raw = np.load(components / "train" / "mouth_photo.npy")
    assert photos.shape == (4, 3, 48, 48) and photos.dtype == torch.float32
    expected = torch.from_numpy(raw[[7, 2, 7, 0]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(photos, expected)
    sk = data.sketches("bg", idx)
    raw_sk = np.load(components / "train" / "bg_sketch.npy")[[7, 2, 7, 0]]
    assert sk.shape == (4, 3, 128, 128)
    assert torch.equal(sk[:, 0], sk[:, 2])  # replicated to 3 channels
    assert torch.equal(sk[:, 0] == 1.0, torch.from_numpy(raw_sk == 255))  # white paper = +1
    assert (sk[:, 0][torch.from_numpy(raw_sk == 0)] == -1.0).all()  # black ink = -1


def test_component_data_errors_name_the_fix(tmp_path, components):
    with pytest.raises(FileNotFoundError, match="dvc repro components"):
        ComponentData(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown parts"):
        ComponentData(components, "train", ("ear",))


def test_sampler_epochs_pairs_and_exact_resume():
    s = IndexSampler(10, 4, seed=3)
    first_epoch = torch.cat([s.batch() for _ in range(5)])[:20]
    assert sorted(first_epoch[:10].tolist()) == list(range(10))  # a permutation per epoch
    assert sorted(first_epoch[10:20].tolist()) == list(range(10))
    a, b = s.pairs()
    assert (a != b).all() and len(a) == 4
    state = s.state_dict()
    ahead = [s.batch() for _ in range(4)] + [torch.cat(s.pairs())]
    t = IndexSampler(10, 4, seed=99)
    t.load_state_dict(state)
    again = [t.batch() for _ in range(4)] + [torch.cat(t.pairs())]
    assert all(torch.equal(x, y) for x, y in zip(ahead, again))


def test_sampler_splits_the_global_batch_over_ranks():
    """batch_size is the global batch: two ranks get disjoint halves of exactly what one process
    draws (swap pairs too, across epoch ends), and keep the same state, so one saved state
    resumes any number of ranks."""
    people = np.repeat(np.arange(5), 2)
    one = IndexSampler(10, 4, seed=3, groups=people)
    ranks = [IndexSampler(10, 4, seed=3, rank=r, world_size=2, groups=people) for r in (0, 1)]
    for _ in range(6):
        halves = [s.batch() for s in ranks]
        assert [len(h) for h in halves] == [2, 2] and torch.equal(torch.cat(halves), one.batch())
        (a0, b0), (a1, b1) = (s.pairs() for s in ranks)
        a, b = one.pairs()
        assert torch.equal(torch.cat([a0, a1]), a) and torch.equal(torch.cat([b0, b1]), b)
    s0, s1 = (s.state_dict() for s in ranks)
    assert torch.equal(s0["generator"], s1["generator"]) and torch.equal(s0["perm"], s1["perm"])
    assert s0["pos"] == s1["pos"]
    with pytest.raises(ValueError, match="batch_size 5 does not split over 2 processes"):
        IndexSampler(10, 5, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        IndexSampler(10, 4, seed=0, rank=2, world_size=2)


def test_swap_pairs_are_always_two_different_people():
    """Two photos per person (as in London): 200 pair batches never pair a person with themself,
    while without groups such pairs do occur."""
    people = np.repeat(np.arange(6), 2)  # rows 2k and 2k+1 are one person
    grouped, plain = IndexSampler(12, 8, seed=1, groups=people), IndexSampler(12, 8, seed=1)
    same_grouped = same_plain = 0
    for _ in range(200):
        a, b = grouped.pairs()
        same_grouped += int((people[a.numpy()] == people[b.numpy()]).sum())
        a, b = plain.pairs()
        assert (a != b).all()
        same_plain += int((people[a.numpy()] == people[b.numpy()]).sum())
    assert same_grouped == 0 and same_plain > 0
    with pytest.raises(ValueError, match="2 people"):
        IndexSampler(2, 2, seed=0, groups=np.array(["p", "p"])).pairs()


def _blob_image(n: int, size: int) -> torch.Tensor:
    """White images with an off-centre black blob, kept away from the border."""
    x = torch.ones(n, 3, size, size)
    x[:, :, size // 3 : size // 2, size // 4 : size // 2] = -1.0
    return x


def test_geometric_augmentation_is_shared_by_photo_and_sketch():
    torch.manual_seed(0)
    cfg = AugmentConfig(affine_p=0.5, degrees=10, translate=0.08, jitter_p=0.0)
    aug = Augmenter(cfg, "nose")
    x = _blob_image(16, 32)
    photo, sketch = aug.pair(x.clone(), x.clone())
    moved = [not torch.equal(p, xi) for p, xi in zip(photo, x)]
    assert any(moved) and not all(moved)  # p=0.5: some samples warped, some left alone
    # Same content, same params: reflection-padded photo and white-padded sketch agree.
    torch.testing.assert_close(photo, sketch, atol=1e-5, rtol=0)


def test_eyes_are_never_flipped_symmetric_parts_are():
    cfg = AugmentConfig(affine_p=0.0, jitter_p=0.0, hflip=True)
    x = _blob_image(16, 32)
    torch.manual_seed(0)
    eye, eye_target = Augmenter(cfg, "eye1").photo(x.clone())
    assert torch.equal(eye, x) and eye_target is eye  # no PhotoShift: the target is the input
    torch.manual_seed(0)
    mouth, _ = Augmenter(cfg, "mouth").photo(x.clone())
    flipped = [bool(torch.equal(m, xi.flip(-1))) for m, xi in zip(mouth, x)]
    kept = [bool(torch.equal(m, xi)) for m, xi in zip(mouth, x)]
    assert any(flipped) and any(kept) and all(f or k for f, k in zip(flipped, kept))


def test_photometric_only_on_photos_and_shared_per_face():
    torch.manual_seed(0)
    cfg = AugmentConfig(affine_p=0.0, hflip=False, jitter_p=1.0, brightness=0.3, contrast=0.0)
    aug = Augmenter(cfg, "bg")
    photo = torch.rand(4, 3, 16, 16) * 2 - 1
    sketch = _blob_image(4, 16)
    p2, s2 = aug.pair(photo, sketch)
    assert not torch.allclose(p2, photo) and torch.equal(s2, sketch)
    # Fusion: the same face's parts get the same jitter (a crop of the jittered bg = jittered
    # crop; contrast is off here because it blends towards each image's own mean).
    faces = aug.faces({"bg": photo, "mouth": photo[:, :, 4:12, 4:12].clone()})
    torch.testing.assert_close(faces["mouth"], faces["bg"][:, :, 4:12, 4:12], atol=1e-5, rtol=0)


def test_disabled_augmentation_is_identity():
    aug = Augmenter(AugmentConfig(enabled=False), "bg")
    x = torch.rand(2, 3, 16, 16)
    inp, target = aug.photo(x)
    assert inp is x and target is x and aug.sketch(x) is x


def _shift_cfg(**kw) -> AugmentConfig:
    base = dict(affine_p=0.0, hflip=False, jitter_p=0.0)
    return AugmentConfig(**{**base, **kw})


def test_photo_shift_light_on_input_and_target_camera_on_input_only():
    """Casts, exposure and side light reach the reconstruction target too (the model must
    carry them); blur and noise only the network input; sketches are never shifted."""
    photo = torch.rand(6, 3, 32, 32) * 1.6 - 0.8
    torch.manual_seed(0)
    light_only = Augmenter(_shift_cfg(cast_p=1.0, exposure_p=1.0, ramp_p=1.0), "bg")
    inp, target = light_only.photo(photo.clone())
    assert torch.equal(inp, target) and not torch.allclose(target, photo, atol=0.05)
    torch.manual_seed(0)
    camera = Augmenter(_shift_cfg(blur_p=1.0, noise_p=1.0), "bg")
    inp, target = camera.photo(photo.clone())
    torch.testing.assert_close(target, photo, atol=1e-5, rtol=0)  # no light drawn: target = photo
    assert (inp - target).abs().mean() > 0.01
    sketch = _blob_image(6, 32)
    p2, s2 = Augmenter(_shift_cfg(cast_p=1.0, noise_p=1.0), "nose").pair(photo.clone(), sketch.clone())
    assert torch.equal(s2, sketch) and not torch.allclose(p2, photo, atol=0.05)


def test_photo_shift_components_do_what_they_say():
    from pipeline.data.augment import PhotoShift

    shift = PhotoShift(_shift_cfg())
    grey = torch.zeros(2, 3, 16, 16)  # mid grey in [-1, 1]
    neutral = {"gains": torch.ones(2, 3), "stops": torch.zeros(2), "gamma": torch.ones(2), "ramp": torch.zeros(2),
               "angle": torch.zeros(2), "blur": torch.zeros(2), "noise": torch.zeros(2), "noise_seed": torch.zeros(1)}
    torch.testing.assert_close(shift.light(grey, neutral), grey, atol=1e-4, rtol=0)
    warm = shift.light(grey, {**neutral, "gains": torch.tensor([[1.3, 1.0, 0.78]] * 2)})
    assert (warm[:, 0] > grey[:, 0] + 0.05).all() and (warm[:, 2] < grey[:, 2] - 0.05).all()
    dark = shift.light(grey, {**neutral, "stops": torch.tensor([-1.0, -1.0])})
    assert (dark < grey - 0.1).all()
    side = shift.light(grey, {**neutral, "ramp": torch.tensor([0.5, 0.5])})  # angle 0: brighter to the right
    assert (side[..., -1] > side[..., 0] + 0.1).all()
    edge = torch.zeros(2, 3, 16, 16)
    edge[..., 8:] = 1.0
    blurred = shift.degrade(edge, {**neutral, "blur": torch.tensor([2.0, 0.0])})
    assert 0.05 < blurred[0, 0, 0, 7] < 0.95 and torch.equal(blurred[1], edge[1])  # sigma 0: untouched


def test_backdrop_is_repainted_on_whole_faces_only():
    """A flat backdrop around a head: whole faces (bg) get another backdrop colour, the head
    keeps its pixels; part crops (a mouth) never get one."""
    x = torch.full((2, 3, 64, 64), 0.6)
    x[:, :, 12:60, 18:46] = -0.4  # the head, darker than the backdrop
    cfg = _shift_cfg(backdrop_p=1.0)
    torch.manual_seed(0)
    _, bg = Augmenter(cfg, "bg", 64).photo(x.clone())
    assert (bg[:, :, :4, :4] - 0.6).abs().amax() > 0.05  # the corner is no longer the studio grey
    torch.testing.assert_close(bg[:, :, 30:40, 26:38], x[:, :, 30:40, 26:38])  # the face is untouched
    torch.manual_seed(0)
    _, mouth = Augmenter(cfg, "mouth", 64).photo(x.clone())
    torch.testing.assert_close(mouth, x)


def test_photo_shift_repeats_with_the_seed():
    photo = torch.rand(4, 3, 16, 16) * 2 - 1
    cfg = _shift_cfg(cast_p=0.5, exposure_p=0.5, ramp_p=0.5, blur_p=0.5, noise_p=0.5)
    torch.manual_seed(3)
    a = Augmenter(cfg, "mouth").photo(photo.clone())
    torch.manual_seed(3)
    b = Augmenter(cfg, "mouth").photo(photo.clone())
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_config_validation_and_paths():
    with pytest.raises(ValueError, match="unknown stage"):
        TrainConfig(stage="nope", part="eye1")
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(stage="local", part="eye1", steps=0)
    c = TrainConfig(stage="local", part="mouth", augment={"enabled": False})
    assert isinstance(c.augment, AugmentConfig) and not c.augment.enabled
    assert str(c.weights_path) == "models/local/mouth.safetensors"
    assert str(c.checkpoint_path) == "checkpoints/local/mouth.pt"
    assert str(c.live_dir) == "dvclive/local/mouth"
    f = TrainConfig(stage="fusion", part="fusion")
    assert str(f.live_dir) == "dvclive/fusion" and str(f.weights_path) == "models/fusion/fusion.safetensors"
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_file_digest_sees_changes_in_big_files(tmp_path):
    p = tmp_path / "a.bin"
    data = np.zeros(1 << 20, np.uint8)
    p.write_bytes(data.tobytes())
    d0 = file_digest(p, full_below=1 << 10)  # sampled-block mode
    data[-5] = 1  # inside the last sampled block
    p.write_bytes(data.tobytes())
    assert file_digest(p, full_below=1 << 10) != d0


def test_cli_config_precedence(tmp_path, monkeypatch):
    """CLI option > stage section > shared `train:` section > top-level keys > dataclass default."""
    import yaml

    import pipeline.core.config
    from stages.train import _config

    params = {
        "lr": 3e-4, "profile": "micro", "seed": 7,
        "train": {"betas": [0.0, 0.99], "log_every": 5, "augment": {"enabled": True, "degrees": 2.0}},
        "train_local": {"steps": 11, "lr_d": 1e-4, "log_every": 3, "augment": {"hue": 0.0},
                        "loss_weights": {"geo": 2.0}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setattr(pipeline.core.config, "PARAMS_FILE", path)
    cfg = _config("local", "nose", {"steps": None, "batch_size": 2, "lr": None, "augment": False})
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.lr_d, cfg.seed, cfg.profile) == (11, 2, 3e-4, 1e-4, 7, "micro")
    assert cfg.betas == (0.0, 0.99) and cfg.log_every == 3 and cfg.loss_weights == {"geo": 2.0}
    assert cfg.augment == AugmentConfig(enabled=False, degrees=2.0, hue=0.0)
    assert cfg.ckpt_every == TrainConfig.ckpt_every  # untouched default
