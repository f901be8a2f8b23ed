"""`--runtime onnx`: the editor's networks run by ONNX Runtime give PyTorch eager's faces."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from pipeline.core.profiles import get_profile
from pipeline.models import runtime as R
from tests.helpers_models import aligned_london, models  # noqa: F401  (fixture)

PROFILE = "micro"


def _editor():
    from benchmarks.edit import random_editor

    return random_editor(get_profile(PROFILE), torch.device("cpu"))  # seeded: the same weights each call


def _render(editor, face: torch.Tensor, sketch: torch.Tensor) -> np.ndarray:
    geometry = editor.geometry_from_sketch(sketch)
    return editor.render(geometry, editor.appearance_codes(face)).numpy()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    r = get_profile(PROFILE).resolution
    return torch.rand(2, 3, r, r, generator=g) * 2 - 1, torch.rand(2, 3, r, r, generator=g) * 2 - 1


def test_onnx_editor_renders_what_eager_renders_and_keeps_its_exports(inputs, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="pip install onnx onnxruntime (the `onnx` extra)")
    face, sketch = inputs
    eager = _editor()
    expected = _render(eager, face, sketch)
    # random_editor shares one set of modules between the parts; each part still gets its own session
    onnx = R.onnx_editor(_editor(), threads=1, cache=tmp_path)
    assert onnx.runtime == "onnx" and onnx.device == torch.device("cpu")
    assert isinstance(onnx.fusion, R.OnnxNet) and isinstance(onnx.parts["mouth"]["generator"], R.OnnxGenerator)
    got = _render(onnx, face, sketch)  # a batch of 2 through sessions exported at batch 1
    assert got.shape == expected.shape == (2, 3, 128, 128)
    assert np.abs(got - expected).max() < 1e-3
    assert not np.allclose(got[0], got[1])  # the faces are the inputs', not one face twice
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 5 * 4 + 1 and all(f.endswith(".onnx") for f in files)

    # A second editor of the same weights loads the kept exports: nothing is exported again ...
    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = R.onnx_editor(_editor(), threads=1, cache=tmp_path)
    assert np.abs(_render(again, face, sketch) - expected).max() < 1e-3
    # ... and other weights are not mistaken for them
    other = _editor()
    with torch.no_grad():
        next(other.fusion.parameters()).add_(0.01)
    with pytest.raises(AssertionError, match="exported again"):
        R.onnx_editor(other, threads=1, cache=tmp_path)


def test_onnx_runtime_is_the_cpu_fp32_path(tmp_path):
    pytest.importorskip("onnxruntime", reason="pip install onnx onnxruntime (the `onnx` extra)")
    with pytest.raises(ValueError, match="CPU fp32 path"):
        R.onnx_editor(_editor().cast(torch.bfloat16), cache=tmp_path)
    with pytest.raises(ValueError, match="residual blocks torch.bfloat16"):  # --dtype bf16-mixed: not with onnx
        R.onnx_editor(_editor().cast_fusion(torch.bfloat16).cast_blocks(torch.bfloat16), cache=tmp_path)
    editor = R.onnx_editor(_editor(), threads=1, cache=False)
    with pytest.raises(ValueError, match="runs in fp32"):
        editor.cast(torch.bfloat16)


def test_onnx_runtime_keeps_a_bf16_fusion_net_in_pytorch(inputs, tmp_path):
    """`--runtime onnx --dtype bf16-fusion`: the part networks by ONNX Runtime, the fusion net the
    same bf16 PyTorch module as `--dtype bf16-fusion` alone, so the two render alike."""
    pytest.importorskip("onnxruntime", reason="pip install onnx onnxruntime (the `onnx` extra)")
    face, sketch = inputs
    torch_only = _render(_editor().cast_fusion(torch.bfloat16), face, sketch)
    mixed = R.onnx_editor(_editor().cast_fusion(torch.bfloat16), threads=1, cache=tmp_path)
    assert isinstance(mixed.parts["mouth"]["image_encoder"], R.OnnxNet)
    assert isinstance(mixed.fusion, torch.nn.Module) and next(mixed.fusion.parameters()).dtype == torch.bfloat16
    assert len(list(tmp_path.iterdir())) == 5 * 4  # no fusion export
    got = _render(mixed, face, sketch)
    bf16_error = np.abs(torch_only - _render(_editor(), face, sketch)).mean()  # bf16 fusion against fp32
    # bf16 rounds the canvas, so eager's and ONNX Runtime's part features (within ~1e-5) round
    # apart in some values (measured 0.23x the bf16 error); a fp32 fusion net would score 1x
    assert np.abs(got - torch_only).mean() < 0.4 * bf16_error


def test_onnx_runtime_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(R.MissingRuntimeError, match="pip install"):
        R.onnx_editor(_editor(), cache=False)


def test_the_studio_loads_the_onnx_runtime(models, london, tmp_path, monkeypatch):
    """`dfe studio --runtime onnx` (params edit.runtime): the photo editor of the trained weights,
    its colour range included, run by ONNX Runtime, edits as the PyTorch one does."""
    pytest.importorskip("onnxruntime", reason="pip install onnx onnxruntime (the `onnx` extra)")
    from pipeline.editing.colour_norm import load_photo_editor
    from pipeline.editing.edit import edit_aligned
    from stages.studio import make_studio

    monkeypatch.setenv("DFE_CACHE", str(tmp_path / "cache"))
    a, b = aligned_london([london / "neutral" / "001_03.jpg", london / "neutral" / "002_03.jpg"], 128)[0]
    outs = {rt: edit_aligned(load_photo_editor(models, PROFILE, "cpu", "fp32", rt), b, geometry_photo=a)
            for rt in ("torch", "onnx")}
    assert np.abs(outs["onnx"].astype(int) - outs["torch"]).max() <= 1 and not np.array_equal(outs["torch"], a)
    assert any((tmp_path / "cache" / "onnx").iterdir())
    studio = make_studio(str(models), PROFILE, "cpu", "fp32", "synth", 0, 512, 0.06, None, None, runtime="onnx")
    assert studio.editor.runtime == "onnx"
    # --dtype bf16-fusion beside it: the parts' sessions of the cache, the fusion net a bf16 module
    mixed = make_studio(str(models), PROFILE, "cpu", "bf16-fusion", "synth", 0, 512, 0.06, None, None, runtime="onnx")
    assert isinstance(mixed.editor.parts["nose"]["generator"], R.OnnxGenerator)
    assert mixed.editor.fusion_dtype == torch.bfloat16 and isinstance(mixed.editor.fusion, torch.nn.Module)
    with pytest.raises(ValueError, match="unknown runtime 'tflite'"):
        load_photo_editor(models, PROFILE, "cpu", "fp32", "tflite")
