"""Official checkpoint import: safe unpickling, layout checks, conversion to our safetensors layout."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
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

# The released checkpoints' names and shapes (a copy of the shared specs/ file, kept in the repo).
SPEC = Path(__file__).resolve().parent / "data" / "official-checkpoint-layout.json"
MICRO = get_profile("micro")
REPO = Path(__file__).resolve().parents[1]
DFE = str(Path(sys.executable).parent / "dfe")  # the installed entry point, as a user runs it


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


# --------------------------------------------------------------------------------------------
# From the released format to edits: `dfe import-official` -> `dfe edit` / `dfe sketch`, and a
# sketch decoder trained for the released encoder.
# --------------------------------------------------------------------------------------------


def _dfe(args: list, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([DFE, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _shape(path: Path) -> tuple[int, ...]:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img.shape


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """Random weights written as the authors' files (pickled dicts of float32 numpy arrays, named
    as in the layout) at the micro profile's shapes, imported by the command a user runs."""
    from pipeline.models.official import write_release

    root = tmp_path_factory.mktemp("official")
    written = write_release(root / "release", MICRO, seed=1)
    assert set(written) == {k.format(part=p) for k in OFFICIAL_FILES for p in (PARTS if "{part}" in k else (None,))}
    r = _dfe(["import-official", root / "release", "--out", root / "models", "--profile", "micro"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "--freeze-encoder" in r.stdout + r.stderr  # the note names the command that makes the missing decoder
    assert (root / "models" / "photo_to_sketch" / "photo_to_sketch.safetensors").is_file()
    return root / "models"


def test_release_format_imports_then_edits_and_sketches_photos(imported: Path, london: Path, tmp_path: Path) -> None:
    geo, app = london / "neutral" / "001_03.jpg", london / "neutral" / "004_03.jpg"
    size = _shape(geo)
    common = ["--profile", "micro", "--models", imported, "--device", "cpu"]

    r = _dfe(["edit", geo, "-a", app, "-o", tmp_path / "edit.png", *common])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert _shape(tmp_path / "edit.png") == size

    # The authors' photo-to-sketch generator draws the editable sketch when it was imported.
    r = _dfe(["sketch", geo, "-o", tmp_path / "sketch.png", "--in-photo-frame", *common])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "sketcher: official" in r.stdout + r.stderr
    assert _shape(tmp_path / "sketch.png") == size[:2]

    # That sketch drives an edit of the same photo, in bf16.
    r = _dfe(["edit", geo, "-a", app, "--geometry-sketch", tmp_path / "sketch.png", "--dtype", "bf16",
              "-o", tmp_path / "from_sketch.png", *common])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert _shape(tmp_path / "from_sketch.png") == size

    r = _dfe(["sketch", geo, "-o", tmp_path / "synth.png", "--sketcher", "synth", *common])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "sketcher: synth" in r.stdout + r.stderr
    assert _shape(tmp_path / "synth.png") == (128, 128)


def test_import_command_refuses_other_shapes_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.models.official import write_release
    from stages.cli import app

    write_release(tmp_path / "release", MICRO)  # micro shapes, imported as the paper's (the default)
    r = CliRunner().invoke(app, ["import-official", str(tmp_path / "release"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "does not match the expected layout" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_imported_weights_edit_without_a_decoder_and_name_the_command_for_one(imported: Path) -> None:
    from pipeline.models.editor import MissingSketchDecoderError, load_editor

    editor = load_editor(imported, MICRO)
    face = torch.rand(2, 3, 128, 128) * 2 - 1
    z = editor.geometry_from_photo(face)
    out = editor.render(z, editor.appearance_codes(face))
    assert out.shape == (2, 3, 128, 128) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert editor.render(editor.geometry_from_sketch(face), editor.appearance_codes(face)).shape == out.shape

    with pytest.raises(MissingSketchDecoderError) as e:
        editor.sketch_from_geometry(z)
    msg = str(e.value)
    assert "\n" not in msg and f"dfe train-sketch-ae --part eye1 --freeze-encoder --models {imported}" in msg
    with pytest.raises(MissingSketchDecoderError):
        load_editor(imported, MICRO, sketch_decoder=True)


def test_bf16_editor_follows_fp32(imported: Path) -> None:
    from pipeline.models.editor import load_editor

    face = torch.rand(1, 3, 128, 128) * 2 - 1
    outs = {}
    for dtype in (torch.float32, torch.bfloat16):
        editor = load_editor(imported, MICRO, dtype=dtype)
        assert {p.dtype for p in editor.fusion.parameters()} == {dtype}
        outs[dtype] = editor.render(editor.geometry_from_photo(face), editor.appearance_codes(face))
        assert outs[dtype].dtype == torch.float32 and outs[dtype].is_inference()
    err = (outs[torch.bfloat16] - outs[torch.float32]).abs().mean()
    assert 0 < err < 0.05, err


def test_freeze_encoder_trains_a_decoder_and_keeps_the_released_encoder_bytes(imported: Path, tmp_path: Path) -> None:
    import shutil

    from pipeline.data.loader import synthetic_components
    from pipeline.models.editor import load_editor
    from pipeline.training.loop import TrainConfig
    from pipeline.training.train_sketch_ae import train_sketch_ae

    models = tmp_path / "models"
    shutil.copytree(imported, models)
    comps = synthetic_components(tmp_path / "components", 128, n_train=4, n_test=2, seed=0)

    def cfg(part: str, models_dir: Path) -> TrainConfig:
        return TrainConfig(stage="sketch_ae", part=part, profile="micro", steps=2, batch_size=2, lr=1e-3,
                           log_every=1, ckpt_every=1, sample_every=2, progress=False, device="cpu",
                           components=str(comps), models_dir=str(models_dir),
                           checkpoints_dir=str(tmp_path / "ckpt"), live_root=str(tmp_path / "live"))

    with pytest.raises(FileNotFoundError, match="freeze-encoder.*dfe import-official"):
        train_sketch_ae("eye1", cfg("eye1", tmp_path / "nothing"), freeze_encoder=True)

    before = {p: load_file(str(models / "sketch_ae" / f"{p}.safetensors")) for p in PARTS}
    for part in PARTS:
        train_sketch_ae(part, cfg(part, models), freeze_encoder=True)
    for part in PARTS:
        path = models / "sketch_ae" / f"{part}.safetensors"
        after = load_file(str(path))
        encoder = {k: v for k, v in after.items() if k.startswith("sketch_encoder.")}
        assert set(encoder) == set(before[part])
        for k, v in encoder.items():  # byte for byte what the importer wrote
            assert v.dtype == before[part][k].dtype and v.numpy().tobytes() == before[part][k].numpy().tobytes(), k
        assert any(k.startswith("sketch_decoder.") for k in after)
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["frozen_encoder"]["from"] == str(path) and meta["profile"]["name"] == "micro"

    # A rerun with more steps resumes the decoder-only run (same encoder, same mode).
    result = train_sketch_ae("mouth", dataclasses.replace(cfg("mouth", models), steps=3), freeze_encoder=True)
    assert result.resumed_from == 2 and result.steps == 3
    assert all(v.numpy().tobytes() == before["mouth"][k].numpy().tobytes()
               for k, v in load_file(str(models / "sketch_ae" / "mouth.safetensors")).items() if k in before["mouth"])

    # Decoded sketches now work with the released encoders.
    editor = load_editor(models, MICRO, sketch_decoder=True)
    sketch = editor.sketch_from_geometry(editor.geometry_from_photo(torch.rand(1, 3, 128, 128) * 2 - 1))
    assert sketch.shape == (1, 3, 128, 128) and torch.isfinite(sketch).all()
