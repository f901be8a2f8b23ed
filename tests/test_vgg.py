"""VGG-19: torchvision-compatible names, weight loading from $TORCH_HOME, layer outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.vgg import MissingWeightsError, VGG19Features, load_vgg19, vgg_weights_path

# torchvision vgg19: index of every conv in `features` and its output channels.
TORCHVISION_CONVS = {
    0: 64, 2: 64, 5: 128, 7: 128, 10: 256, 12: 256, 14: 256, 16: 256,
    19: 512, 21: 512, 23: 512, 25: 512, 28: 512, 30: 512, 32: 512, 34: 512,
}  # fmt: skip


def torchvision_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-format vgg19 state_dict with random values (classifier shrunk: it is ignored)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    c_in = 3
    for idx, c_out in TORCHVISION_CONVS.items():
        state[f"features.{idx}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g) * (2 / (9 * c_in)) ** 0.5
        state[f"features.{idx}.bias"] = torch.randn(c_out, generator=g) * 0.01
        c_in = c_out
    state["classifier.0.weight"] = torch.randn(8, 4, generator=g)
    state["classifier.6.bias"] = torch.randn(8, generator=g)
    return state


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    return tmp_path / "th"


def test_weights_path_honours_torch_home_and_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "a"))
    assert vgg_weights_path() == tmp_path / "a" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert vgg_weights_path() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"


def test_state_dict_names_and_shapes_match_torchvision() -> None:
    expected = {k: v.shape for k, v in torchvision_state().items() if k.startswith("features.")}
    got = {k: v.shape for k, v in VGG19Features().state_dict().items()}
    assert got == expected


def test_missing_weights_raise_with_path(torch_home: Path) -> None:
    path = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(MissingWeightsError) as err:
        load_vgg19()
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert str(path) in msg and str(path.parent) in msg and "torchvision" in msg
    assert load_vgg19(required=False) is None


def test_loads_torchvision_checkpoint_frozen(torch_home: Path) -> None:
    state = torchvision_state(seed=1)
    path = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    vgg = load_vgg19(device="cpu")
    assert vgg is not None and not vgg.training
    assert all(not p.requires_grad for p in vgg.parameters())
    for key, value in vgg.state_dict().items():
        assert torch.equal(value, state[key]), key
    # An explicit path works too, and a checkpoint missing a feature tensor is refused.
    del state["features.34.bias"]
    broken = torch_home / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(RuntimeError, match="features.34.bias"):
        load_vgg19(weights_path=broken)


def test_layer_shapes_normalisation_and_early_stop() -> None:
    torch.manual_seed(0)
    vgg = VGG19Features().eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    layers = ("relu1_1", "relu3_1", "relu4_1", "relu5_1", "relu5_4")
    out = vgg(x, layers)
    assert list(out) == list(layers)
    shapes = {name: tuple(t.shape) for name, t in out.items()}
    assert shapes == {
        "relu1_1": (2, 64, 64, 64), "relu3_1": (2, 256, 16, 16), "relu4_1": (2, 512, 8, 8),
        "relu5_1": (2, 512, 4, 4), "relu5_4": (2, 512, 4, 4),
    }  # fmt: skip
    # relu1_1 = ReLU(conv(ImageNet-normalised [0, 1] RGB)).
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    conv = vgg.features[0]
    ref = F.relu(conv(((x + 1) / 2 - mean) / std))
    torch.testing.assert_close(out["relu1_1"], ref)

    called: list[int] = []
    for i, m in enumerate(vgg.features):
        m.register_forward_hook(lambda *_, i=i: called.append(i))
    vgg(x, ("relu2_1",))
    assert max(called) == 6  # relu2_1 is features.6: nothing deeper runs
    with pytest.raises(ValueError, match="relu9_9"):
        vgg(x, ("relu9_9",))
