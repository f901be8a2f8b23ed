"""Networks: the paper layout equals the released checkpoints; small profiles run with the right shapes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from pipeline.models.networks import AdaIN, GlobalFusion, MultiScaleDiscriminator, PartGenerator, PhotoToSketch, SketchDecoder, build_part_modules, count_parameters, fuse_canvas, image_encoder, sketch_encoder, validate_profile
from pipeline.core.profiles import BOXES_512, get_profile, part_boxes

# The released checkpoints' names, shapes and order (a copy of the shared specs/ file, kept in the repo).
SPEC = Path(__file__).resolve().parent / "data" / "official-checkpoint-layout.json"

# DESIGN.md section 3, in millions of parameters (rounded to 0.01 M there).
PAPER_COUNTS_M = {
    "sketch_encoder/sketch_encoder_{part}.pkl": 25.16,
    "image_encoder/image_encoder_{part}.pkl": 119.57,
    "generator/generator_{part}.pkl": 83.21,
    "global_fuse.pkl": 88.27,
    "sketch_generator.pkl": 45.64,
}


def _paper_modules() -> dict[str, torch.nn.Module]:
    p = get_profile("paper")
    with torch.device("meta"):  # 1.23 B parameters without allocating them
        return {
            "sketch_encoder/sketch_encoder_{part}.pkl": sketch_encoder(p),
            "image_encoder/image_encoder_{part}.pkl": image_encoder(p),
            "generator/generator_{part}.pkl": PartGenerator(p),
            "global_fuse.pkl": GlobalFusion(p),
            "sketch_generator.pkl": PhotoToSketch(p),
        }


def test_paper_state_dicts_equal_official_layout() -> None:
    spec = json.loads(SPEC.read_text())
    modules = _paper_modules()
    assert set(modules) == set(spec)
    for key, module in modules.items():
        ours = [(name, list(t.shape)) for name, t in module.state_dict().items()]
        assert ours == list(spec[key].items()), key  # names, shapes and order
        assert round(count_parameters(module) / 1e6, 2) == PAPER_COUNTS_M[key], key
    gen = modules["generator/generator_{part}.pkl"]
    assert gen.num_adain_params == 18304
    # DESIGN's "about 1.23 B in all" is the editing networks: 5 parts x 3 + fusion, without photo-to-sketch.
    editing = sum(
        count_parameters(m) * (5 if "{part}" in k else 1) for k, m in modules.items() if k != "sketch_generator.pkl"
    )
    assert round(editing / 1e9, 2) == 1.23


@pytest.mark.parametrize("name", ["small", "micro"])
def test_part_modules_forward_shapes_for_every_part(name: str) -> None:
    profile = get_profile(name)
    validate_profile(profile)
    torch.manual_seed(0)
    mods = build_part_modules(profile)
    assert set(mods) == {"sketch_encoder", "sketch_decoder", "image_encoder", "generator"}
    boxes = part_boxes(profile.resolution)
    features = {}
    for part, (_, _, s) in boxes.items():
        x = torch.rand(2, 3, s, s) * 2 - 1
        zs, zi = mods["sketch_encoder"](x), mods["image_encoder"](x)
        assert zs.shape == zi.shape == (2, profile.latent_channels, s // 16, s // 16), part
        sketch = mods["sketch_decoder"](zs)
        assert sketch.shape == (2, 3, s, s) and sketch.abs().max() <= 1
        code = mods["generator"].style(x)
        assert code.shape == (2, profile.app_code)
        assert mods["generator"].adain_params(code).shape == (2, mods["generator"].num_adain_params)
        rgb, feat = mods["generator"](zi, x)
        assert rgb.shape == (2, 3, s, s) and rgb.abs().max() <= 1
        assert feat.shape == (2, profile.ngf, s, s)
        features[part] = feat
    canvas = fuse_canvas(features, boxes)
    r = profile.resolution
    assert canvas.shape == (2, profile.ngf, r, r)
    assert GlobalFusion(profile)(canvas).shape == (2, 3, r, r)
    assert PhotoToSketch(profile)(torch.zeros(1, 3, r, r)).shape == (1, 3, r, r)


def test_validate_profile_rejects_crops_too_small_for_the_networks() -> None:
    validate_profile(get_profile("paper"))
    validate_profile(get_profile("small"))
    tiny = dataclasses.replace(get_profile("small"), name="tiny", resolution=64)
    with pytest.raises(ValueError, match="eye1 crop 16 px"):
        validate_profile(tiny)


def test_inputs_that_are_not_multiples_of_16_are_rejected() -> None:
    enc = sketch_encoder(get_profile("small"))
    with pytest.raises(ValueError, match="multiple of 16"):
        enc(torch.zeros(1, 3, 40, 40))
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        enc(torch.zeros(1, 1, 32, 32))


def test_sketch_decoder_returns_seven_activations() -> None:
    profile = get_profile("small")
    dec = SketchDecoder(profile)
    z = torch.randn(1, profile.latent_channels, 3, 3)
    out, acts = dec(z, return_activations=True)
    assert len(acts) == 7
    assert acts[0] is z and torch.equal(acts[-1], out)
    c = profile.latent_channels
    expected = [(c, 3), (c, 3), (c // 2, 6), (c // 4, 12), (c // 8, 24), (c // 16, 48), (3, 48)]
    assert [(a.shape[1], a.shape[2]) for a in acts] == expected
    assert torch.equal(dec(z), out)


def test_adain_normalises_then_scales_and_shifts_per_sample() -> None:
    x = torch.randn(2, 3, 5, 5) * 4 + 7
    w, b = torch.randn(2, 3), torch.randn(2, 3)
    m = AdaIN(3)
    with pytest.raises(RuntimeError):
        m(x)
    m.set_params(w, b)
    mean, std = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True).add(1e-5).sqrt()
    expected = (x - mean) / std * w[:, :, None, None] + b[:, :, None, None]
    torch.testing.assert_close(m(x), expected)


def test_generator_assigns_bias_then_weight_in_module_order() -> None:
    profile = get_profile("small")
    gen = PartGenerator(profile)
    adains = [m for m in gen.model.modules() if isinstance(m, AdaIN)]
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for i, m in enumerate(adains):
        m.register_forward_hook(lambda mod, _in, _out, i=i: seen.__setitem__(i, (mod.bias.clone(), mod.weight.clone())))
    code = torch.rand(2, profile.app_code)
    params = gen.adain_params(code)
    gen.decode(torch.randn(2, profile.latent_channels, 2, 2), code)
    offset = 0
    for i, m in enumerate(adains):
        c = m.num_features
        bias, weight = seen[i]
        torch.testing.assert_close(bias, params[:, offset : offset + c])
        torch.testing.assert_close(weight, params[:, offset + c : offset + 2 * c])
        offset += 2 * c
        assert m.weight is None and m.bias is None  # no batch state kept after decode
    assert offset == params.shape[1] == gen.num_adain_params


def test_appearance_is_per_sample_and_drives_the_output() -> None:
    profile = get_profile("small")
    torch.manual_seed(0)
    gen = PartGenerator(profile)
    z = torch.randn(2, profile.latent_channels, 2, 2)
    app = torch.rand(2, 3, 32, 32) * 2 - 1
    rgb, _ = gen(z, app)
    app2 = app.clone()
    app2[1] = -app2[1]
    rgb2, _ = gen(z, app2)
    torch.testing.assert_close(rgb2[0], rgb[0])
    assert (rgb2[1] - rgb[1]).abs().max() > 1e-4


def test_fuse_canvas_pastes_in_order_and_crops_the_nose() -> None:
    # One channel, each part a constant: bg 0, mouth 1, nose 2, eye1 3, eye2 4 (paper boxes).
    values = {"bg": 0.0, "mouth": 1.0, "nose": 2.0, "eye1": 3.0, "eye2": 4.0}
    feats = {
        p: torch.full((1, 1, BOXES_512[p][2], BOXES_512[p][2]), v, requires_grad=True) for p, v in values.items()
    }
    canvas = fuse_canvas(feats, BOXES_512)
    at = lambda y, x: canvas[0, 0, y, x].item()  # noqa: E731
    assert at(10, 10) == 0  # outside every part
    assert at(480, 250) == 1  # mouth only
    assert at(340, 250) == 2  # nose over mouth (nose rows 232..355)
    assert at(370, 250) == 1  # inside the nose box but below its 124 pasted rows: mouth shows
    assert at(250, 200) == 3  # eye1 over nose
    assert at(250, 300) == 4  # eye2 over nose
    for p, v in values.items():
        assert torch.all(feats[p] == v)  # inputs untouched
    canvas.backward(torch.ones_like(canvas))
    g = {p: f.grad[0, 0] for p, f in feats.items()}
    assert g["nose"][52:124].eq(1).all() and g["nose"][124:].eq(0).all()  # eyes cover rows < 52
    assert g["eye1"].eq(1).all() and g["eye2"].eq(1).all()
    # Every canvas pixel's gradient goes to exactly one part.
    total = g["bg"].sum() + sum(g[p].sum() for p in ("mouth", "nose", "eye1", "eye2"))
    assert total == 512 * 512
    assert g["bg"][340, 250] == 0 and g["mouth"][340 - 301, 250 - 169] == 0


def test_fuse_canvas_rejects_a_feature_of_the_wrong_size() -> None:
    boxes = part_boxes(128)
    feats = {p: torch.zeros(1, 2, s, s) for p, (_, _, s) in boxes.items()}
    feats["nose"] = torch.zeros(1, 2, 32, 32)
    with pytest.raises(ValueError, match="nose"):
        fuse_canvas(feats, boxes)


def test_multiscale_discriminator_returns_features_per_scale() -> None:
    profile = get_profile("small")
    d = MultiScaleDiscriminator(profile, in_channels=6)
    out = d(torch.randn(2, 6, 64, 64))
    assert len(out) == profile.disc_scales
    for scale in out:
        assert len(scale) == profile.disc_layers + 2
        assert scale[-1].shape[:2] == (2, 1)
    assert out[1][0].shape[-1] < out[0][0].shape[-1]  # the second scale sees a downsampled input



def test_generator_feature_is_decode_without_its_rgb_head() -> None:
    """The editor asks only for the feature map: the same tensor as decode's, without the head."""
    profile = get_profile("small")
    torch.manual_seed(0)
    gen = PartGenerator(profile).eval()
    z, code = torch.randn(2, profile.latent_channels, 2, 2), torch.rand(2, profile.app_code)
    rgb, feature = gen.decode(z, code)
    assert torch.equal(gen.feature(z, code), feature) and rgb.shape[1] == 3 and feature.shape[1] == profile.ngf
    assert all(m.weight is None for m in gen.model.modules() if isinstance(m, AdaIN))


@pytest.mark.parametrize("norm", ["in", "adain"])
def test_a_bf16_residual_block_keeps_the_fp32_stream(norm: str) -> None:
    """ResBlock.cast(bf16): the branch runs in bf16 channels_last, the sum and output stay fp32,
    close to the fp32 block; with `branch_dtype` None again (Editor.cast) the branch is fp32 again."""
    import copy

    from pipeline.models.networks import ResBlock

    torch.manual_seed(0)
    block = ResBlock(32, norm=norm).eval()
    adains = [m for m in block.modules() if isinstance(m, AdaIN)]
    for m in adains:  # per-sample parameters in fp32, as PartGenerator assigns them
        m.set_params(torch.rand(2, 32) + 0.5, torch.randn(2, 32) * 0.1)
    x = torch.randn(2, 32, 16, 16)
    ref = block(x)
    half = copy.deepcopy(block)
    for a, b in zip([m for m in half.modules() if isinstance(m, AdaIN)], adains):
        a.set_params(b.weight, b.bias)
    half.cast(torch.bfloat16)
    seen = []
    half.conv_block[1].conv.register_forward_hook(lambda mod, i, o: seen.append((i[0].dtype, o.dtype)))
    out = half(x)
    assert seen == [(torch.bfloat16, torch.bfloat16)]
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert half.conv_block[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    err = (out - ref).abs()
    assert 0 < err.max() < 0.1 and err.mean() < 0.01, (err.max(), err.mean())
    half.to(torch.float32).branch_dtype = None  # what Editor.cast does: fp32 throughout again
    half(x)
    assert seen[-1] == (torch.float32, torch.float32)
