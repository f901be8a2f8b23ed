"""Official checkpoint import: safe unpickling, layout checks, conversion to our safetensors layout."""

from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline import PARTS
from pipeline.models.networks import GlobalFusion, PartGenerator, SketchDecoder, sketch_encoder
from pipeline.models.official import OFFICIAL_FILES, NO_SKETCH_DECODER, LayoutError, UnsafePickleError, import_official, official_layout, safe_load_pickle
from pipeline.models.weights import load_modules_from_safetensors, save_modules_safetensors
from pipeline.core.profiles import get_profile

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "official-checkpoint-layout.json"
MICRO = get_profile("micro")


def _write_official(src: Path, layout, parts=PARTS, protocol: int = 2, seed: int = 0) -> dict[str, dict]:
    """Random float32 checkpoints named and shaped as `layout`, pickled like the release."""
    rng = np.random.default_rng(seed)
    written = {}
    for key, shapes in layout.items():
        for part in parts if "{part}" in key else (None,):
            arrays = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
            path = src / key.format(part=part)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(arrays, protocol=protocol))
            written[key.format(part=part)] = arrays
    return written


class _Payload:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_official_layout_of_paper_profile_is_the_released_one() -> None:
    spec = json.loads(SPEC.read_text())
    layout = official_layout()
    assert set(layout) == set(spec) == set(OFFICIAL_FILES)
    for key in spec:
        assert {n: list(s) for n, s in layout[key].items()} == spec[key], key


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_safe_load_reads_numpy_dicts_of_any_protocol(tmp_path: Path, protocol: int) -> None:
    arrays = OrderedDict(a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.ones((4,), np.float64))
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    got = safe_load_pickle(path)
    assert list(got) == ["a", "b"]
    np.testing.assert_array_equal(got["a"], arrays["a"])
    assert got["b"].dtype == np.float32


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_pickle_is_rejected_without_running(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model.1.weight": _Payload(marker)}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*system"):
        safe_load_pickle(path)
    assert not marker.exists()


def test_non_array_entries_and_garbage_are_rejected(tmp_path: Path) -> None:
    ints = tmp_path / "ints.pkl"
    ints.write_bytes(pickle.dumps({"w": np.arange(3)}))
    with pytest.raises(UnsafePickleError, match="ints.pkl.*'w'.*not a float array"):
        safe_load_pickle(ints)
    lst = tmp_path / "list.pkl"
    lst.write_bytes(pickle.dumps([np.zeros(2, np.float32)]))
    with pytest.raises(UnsafePickleError, match="expected a dict"):
        safe_load_pickle(lst)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(UnsafePickleError, match="junk.pkl"):
        safe_load_pickle(junk)


def test_import_converts_to_trainer_layout_and_keeps_values(tmp_path: Path) -> None:
    layout = official_layout(MICRO)
    src, out = tmp_path / "release", tmp_path / "models"
    written = _write_official(src, layout, protocol=4)
    report = import_official(src, out, profile=MICRO, layout=layout)

    expected_files = {f"{stage}/{p}.safetensors" for stage in ("sketch_ae", "image_encoder", "local") for p in PARTS}
    expected_files |= {"fusion/fusion.safetensors", "photo_to_sketch/photo_to_sketch.safetensors"}
    assert set(report["files"]) == expected_files
    assert {str(p.relative_to(out)) for p in out.rglob("*.safetensors")} == expected_files
    assert NO_SKETCH_DECODER in report["notes"]
    assert report["parameters"] == sum(a.size for arrays in written.values() for a in arrays.values())

    # Values land in the right module under the trainer's prefixes.
    tensors = load_file(str(out / "local" / "nose.safetensors"))
    src_gen = written["generator/generator_nose.pkl"]
    assert set(tensors) == {f"generator.{k}" for k in src_gen}
    np.testing.assert_array_equal(
        tensors["generator.enc_style.model.7.bias"].numpy(), src_gen["enc_style.model.7.bias"]
    )
    assert all(k.startswith("sketch_encoder.") for k in load_file(str(out / "sketch_ae" / "eye1.safetensors")))

    gen, fusion, enc = PartGenerator(MICRO), GlobalFusion(MICRO), sketch_encoder(MICRO)
    load_modules_from_safetensors(out / "local" / "nose.safetensors", {"generator": gen})
    load_modules_from_safetensors(out / "fusion" / "fusion.safetensors", {"fusion": fusion})
    load_modules_from_safetensors(out / "sketch_ae" / "mouth.safetensors", {"sketch_encoder": enc})
    for name, p in gen.state_dict().items():
        np.testing.assert_array_equal(p.numpy(), src_gen[name])
    for name, p in fusion.state_dict().items():
        np.testing.assert_array_equal(p.numpy(), written["global_fuse.pkl"][name])
    np.testing.assert_array_equal(
        enc.state_dict()["model.1.weight"].numpy(), written["sketch_encoder/sketch_encoder_mouth.pkl"]["model.1.weight"]
    )
    # Sidecar JSON names the profile, as the trainer's loaders expect.
    assert json.loads((out / "local" / "nose.json").read_text())["profile"]["name"] == "micro"


def test_import_lists_every_layout_mismatch(tmp_path: Path) -> None:
    layout = official_layout(MICRO)
    src = tmp_path / "release"
    _write_official(src, layout, parts=("eye1",))
    bad = src / "generator" / "generator_eye1.pkl"
    arrays = safe_load_pickle(bad)
    del arrays["model.4.bias"]
    arrays["model.99.weight"] = np.zeros(3, np.float32)
    arrays["enc_style.model.7.weight"] = np.zeros((5, 16, 1, 1), np.float32)
    bad.write_bytes(pickle.dumps(arrays))
    with pytest.raises(LayoutError) as e:
        import_official(src, tmp_path / "out", parts=("eye1",), profile=MICRO, layout=layout)
    msg = str(e.value)
    assert "generator_eye1.pkl" in msg and "missing (1): model.4.bias" in msg
    assert "unexpected (1): model.99.weight" in msg
    assert "enc_style.model.7.weight: (5, 16, 1, 1) != (376, 16, 1, 1)" in msg


def test_import_checks_all_files_exist_before_writing(tmp_path: Path) -> None:
    layout = official_layout(MICRO)
    src, out = tmp_path / "release", tmp_path / "out"
    _write_official(src, layout)
    (src / "image_encoder" / "image_encoder_mouth.pkl").unlink()
    (src / "global_fuse.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="lacks 2.*image_encoder_mouth.pkl.*global_fuse.pkl"):
        import_official(src, out, profile=MICRO, layout=layout)
    assert not out.exists()


def test_import_refuses_a_malicious_checkpoint(tmp_path: Path) -> None:
    layout = official_layout(MICRO)
    src, marker = tmp_path / "release", tmp_path / "pwned"
    _write_official(src, layout, parts=("bg",))
    (src / "sketch_generator.pkl").write_bytes(pickle.dumps({"x": _Payload(marker)}))
    with pytest.raises(UnsafePickleError, match="sketch_generator.pkl"):
        import_official(src, tmp_path / "out", parts=("bg",), profile=MICRO, layout=layout)
    assert not marker.exists()


def test_save_and_load_modules_round_trip_and_strictness(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc, dec = sketch_encoder(MICRO), SketchDecoder(MICRO)
    path = tmp_path / "sketch_ae" / "eye1.safetensors"
    save_modules_safetensors(path, {"sketch_encoder": enc, "sketch_decoder": dec})
    assert [p.name for p in path.parent.iterdir()] == ["eye1.safetensors"]  # no temp file left

    enc2, dec2 = sketch_encoder(MICRO), SketchDecoder(MICRO)
    assert load_modules_from_safetensors(path, {"sketch_encoder": enc2, "sketch_decoder": dec2}) == {
        "missing": [], "unexpected": []
    }
    for a, b in zip(enc.state_dict().values(), enc2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(dec.state_dict().values(), dec2.state_dict().values()):
        assert torch.equal(a, b)

    with pytest.raises(KeyError, match="no requested module"):  # decoder tensors left unused
        load_modules_from_safetensors(path, {"sketch_encoder": sketch_encoder(MICRO)})
    with pytest.raises(KeyError, match="no 'generator.\\*' tensors"):
        load_modules_from_safetensors(
            path, {"sketch_encoder": enc2, "sketch_decoder": dec2, "generator": PartGenerator(MICRO)}
        )
    result = load_modules_from_safetensors(path, {"sketch_encoder": enc2}, strict=False)
    assert result["missing"] == [] and len(result["unexpected"]) == len(dec.state_dict())
    assert all(k.startswith("sketch_decoder.") for k in result["unexpected"])
