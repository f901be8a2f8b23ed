"""`dfe attribute-vector` and `dfe attribute` on generated photos (London faces resized, recoded and
placed on canvases of other sizes, blank and junk files) with one-step micro models."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from pipeline import PARTS
from stages.attribute import attribute_cmd, attribute_vector_cmd
from stages.edit import edit_cmd
from tests.helpers_models import PROFILE, models, single_thread  # noqa: F401  (fixtures)

app = typer.Typer()
app.command("attribute-vector")(attribute_vector_cmd)
app.command("attribute")(attribute_cmd)
app.command("edit")(edit_cmd)
runner = CliRunner()
R = 128  # the micro profile's aligned size


def _read(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img[..., ::-1] if img.ndim == 3 else img


def _write(path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def _london(london, label: str, ident: str) -> np.ndarray:
    return _read(london / label / f"{ident}_{'03' if label == 'neutral' else '08'}.jpg")


def _on_canvas(face: np.ndarray, size: tuple[int, int], side: int, at: tuple[int, int]) -> np.ndarray:
    """`face` shrunk to side x side on a grey (h, w) canvas at (x, y): a photo of another size."""
    h, w = size
    canvas = np.full((h, w, 3), 180, np.uint8)
    x, y = at
    canvas[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    return canvas


@pytest.fixture(scope="module")
def folders(tmp_path_factory, london):
    """with/: smiling photos as JPEG and PNG of three sizes, a blank image and a junk file (both
    skipped); without/: neutral photos; other/: a second attribute; photo.png: a test person's
    neutral face on a 900x700 canvas; blank.png; junk.jpg; empty/."""
    root = tmp_path_factory.mktemp("attr")
    for d in ("with", "without", "other_with", "other_without", "empty", "nofaces"):
        (root / d).mkdir()
    for k, ident in enumerate(("001", "002", "004")):
        side = (1024, 600, 400)[k]
        smile = cv2.resize(_london(london, "smiling", ident), (side, side), interpolation=cv2.INTER_AREA)
        _write(root / "with" / f"s{ident}.{'png' if k == 1 else 'jpg'}", smile)
        _write(root / "without" / f"n{ident}.jpg", _on_canvas(_london(london, "neutral", ident), (800, 700), 600, (50, 100)))
    blank = np.full((300, 400, 3), 200, np.uint8)
    _write(root / "with" / "blank.png", blank)
    (root / "with" / "junk.jpg").write_bytes(b"not a photo\n" * 20)
    (root / "with" / "notes.txt").write_text("not an image: ignored")
    _write(root / "nofaces" / "blank.png", blank)
    (root / "nofaces" / "junk.jpg").write_bytes(b"not a photo\n" * 20)
    # A second attribute for the combination: the smiling photos of other people against the
    # neutral photos of the first (any two sets make a vector; its meaning does not matter here).
    for ident in ("005", "006"):
        _write(root / "other_with" / f"s{ident}.jpg", _london(london, "smiling", ident))
        _write(root / "other_without" / f"n{ident}.jpg", _london(london, "neutral", ident))
    _write(root / "photo.png", _on_canvas(_london(london, "neutral", "010"), (700, 900), 560, (200, 70)))
    _write(root / "blank.png", blank)
    (root / "junk.jpg").write_bytes(b"hello, not a JPEG\n" * 10)
    return root


def _common(models) -> list[str]:
    return ["--profile", PROFILE, "--models", str(models), "--device", "cpu"]


def _one_line_error(r, *words: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def vectors(models, folders, tmp_path_factory):
    """smile.safetensors (with/ vs without/) and other.safetensors, learned by the command."""
    out = tmp_path_factory.mktemp("vectors")
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(out / "no_torch_home"))  # no VGG-19 weights
    try:
        for name, w, wo in (("smile", "with", "without"), ("other", "other_with", "other_without")):
            r = runner.invoke(app, ["attribute-vector", "--with", str(folders / w), "--without", str(folders / wo),
                                    "-o", str(out / f"{name}.safetensors"), "--parts", "mouth,nose,bg",
                                    "--spaces", "geometry,appearance", "--no-normalise", *_common(models)])
            assert r.exit_code == 0, r.output
    finally:
        mp.undo()
    return out


def test_vector_from_folders_records_how_it_was_made(vectors, folders, models):
    from pipeline.dfi.interpolation import learned_attribute_vectors
    from pipeline.dfi.vectors import load_vector, models_fingerprint
    from pipeline.editing.edit import FaceDetector, align_image, read_image
    from pipeline.models.editor import encode, load_editor

    v = load_vector(vectors / "smile.safetensors")
    assert (v.name, v.profile, v.resolution, v.parts, v.spaces) == (
        "smile", PROFILE, R, ("mouth", "nose", "bg"), ("geometry", "appearance"))
    assert v.made_by == "dfe attribute-vector" and v.alpha == 1.0 and not v.normalise
    w, wo = v.examples["with"], v.examples["without"]
    assert w.source == str(folders / "with") and wo.source == str(folders / "without")
    assert w.files == ["s001.jpg", "s002.png", "s004.jpg"] and len(wo) == 3
    assert set(w.skipped) == {"blank.png", "junk.jpg"}  # listed with their reasons, never fatal
    assert "no face found" in w.skipped["blank.png"] and "cannot read" in w.skipped["junk.jpg"]
    assert v.classic is None and v.classic_status.startswith("absent: VGG-19 ImageNet weights not found")
    assert v.models_fingerprint == models_fingerprint(models) != ""
    assert set(v.learned) == set(PARTS)
    assert len(v.shape_points) == 48  # neighbours by the shape the attribute moves least

    # Known answer: the examples are the photos aligned as the pipeline aligns them, and the
    # vectors are the mean differences of their learned latents.
    det = FaceDetector(upsample=1, detect_side=512)
    first = align_image(read_image(folders / "with" / "s001.jpg"), R, det, "s001.jpg")
    assert np.array_equal(w.faces[0], first.face)
    editor = load_editor(models, PROFILE)
    gw, aw = encode(editor, w.faces, 4, torch.device("cpu"), "with")
    gwo, awo = encode(editor, wo.faces, 4, torch.device("cpu"), "without")
    want = learned_attribute_vectors(gw, gwo, aw, awo, normalise=False)
    for p in PARTS:
        for s in ("geometry", "appearance"):
            torch.testing.assert_close(v.learned[p][s], want[p][s], rtol=1e-5, atol=1e-5)


def test_classic_vector_when_vgg_weights_are_present(models, folders, tmp_path, monkeypatch):
    from pipeline.dfi.interpolation import attribute_vector, mean_dfi_features
    from pipeline.dfi.vectors import load_vector
    from pipeline.core.tensors import faces_to_tensor
    from pipeline.models.vgg import VGG19Features, load_vgg19, vgg_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(0)
    vgg_weights_path().parent.mkdir(parents=True)
    torch.save(VGG19Features().state_dict(), vgg_weights_path())  # random: the mechanics, not the meaning
    r = runner.invoke(app, ["attribute-vector", "--with", str(folders / "other_with"), "--without",
                            str(folders / "other_without"), "-o", str(tmp_path / "v.safetensors"), *_common(models)])
    assert r.exit_code == 0, r.output
    v = load_vector(tmp_path / "v.safetensors")
    assert v.classic_status.startswith("vgg19 relu3_1,relu4_1,relu5_1")
    vgg = load_vgg19("cpu")
    phi_t = mean_dfi_features(vgg, faces_to_tensor(v.examples["with"].faces, torch.device("cpu")))
    phi_s = mean_dfi_features(vgg, faces_to_tensor(v.examples["without"].faces, torch.device("cpu")))
    torch.testing.assert_close(v.classic, attribute_vector(phi_t, phi_s), rtol=1e-4, atol=1e-6)


def test_attribute_edit_strip_and_sketch_in_the_photo_frame(vectors, folders, models, tmp_path):
    photo = _read(folders / "photo.png")
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", str(vectors / "smile.safetensors"),
                            "--alpha", "1.5", "-o", str(tmp_path / "out.png"), "--strip", "0,1,2",
                            "--sketch-out", str(tmp_path / "sk.png"), *_common(models)])
    assert r.exit_code == 0, r.output
    assert "smile a=1.5" in r.output and "seconds: model" in r.output
    out = _read(tmp_path / "out.png")
    assert out.shape == photo.shape
    changed = np.abs(out.astype(np.int16) - photo).max(axis=2) > 0
    assert 0.02 < changed.mean() < 0.5  # the face only: the canvas around it keeps its pixels
    assert not changed[:60].any() and not changed[:, :150].any()
    strip = _read(tmp_path / "out_strip.png")
    assert strip.shape[1] >= 4 * 256 and strip.shape[0] > 256  # photo + 3 alphas, labelled tiles
    sk = _read(tmp_path / "sk.png")
    assert sk.shape == photo.shape[:2] and sk[0, 0] == 255 and (sk < 255).any()

    # By default only the change goes in: alpha 0 gives the photo back, pixel for pixel.
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", str(vectors / "smile.safetensors"),
                            "--alpha", "0", "-o", str(tmp_path / "a0.png"), *_common(models)])
    assert r.exit_code == 0, r.output
    assert np.array_equal(_read(tmp_path / "a0.png"), photo)
    # --blend face pastes the edited face: alpha 0 is the reconstruction `dfe edit` makes of the
    # photo with its own appearance.
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", str(vectors / "smile.safetensors"),
                            "--alpha", "0", "--blend", "face", "-o", str(tmp_path / "a0face.png"), *_common(models)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["edit", str(folders / "photo.png"), "-a", str(folders / "photo.png"), "--render", "full",
                            "-o", str(tmp_path / "recon.png"), *_common(models)])
    assert r.exit_code == 0, r.output
    assert np.abs(_read(tmp_path / "a0face.png").astype(np.int16) - _read(tmp_path / "recon.png")).max() <= 1
    # The same edit pasted as a face replaces the photo's pixels; the change keeps them nearer.
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", str(vectors / "smile.safetensors"),
                            "--alpha", "1.5", "--blend", "face", "-o", str(tmp_path / "face.png"), *_common(models)])
    assert r.exit_code == 0, r.output
    face = _read(tmp_path / "face.png").astype(np.int16)
    assert np.abs(out.astype(np.int16) - photo).mean() < np.abs(face - photo).mean()

    # JPEG output for a .jpg name.
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", str(vectors / "smile.safetensors"),
                            "-o", str(tmp_path / "out.jpg"), *_common(models)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_two_vectors_combine_as_their_weighted_sum(vectors, folders, models, tmp_path):
    from pipeline.dfi.attribute import parse_vector_spec
    from pipeline.dfi.vectors import load_vector, save_vector
    from pipeline.editing.edit import FaceDetector, align_image, read_image

    assert parse_vector_spec("a/smile.safetensors:1.5") == ("a/smile.safetensors", 1.5)
    assert parse_vector_spec("C:\\v\\smile.safetensors") == ("C:\\v\\smile.safetensors", None)
    assert parse_vector_spec("smile.safetensors:-0.5") == ("smile.safetensors", -0.5)

    face = align_image(read_image(folders / "photo.png"), R, FaceDetector(), "photo.png").face
    _write(tmp_path / "face.png", face)  # an aligned crop: --aligned outputs compare exactly
    smile, other = load_vector(vectors / "smile.safetensors"), load_vector(vectors / "other.safetensors")
    summed = load_vector(vectors / "smile.safetensors")
    summed.learned = {p: {s: smile.learned[p][s] * 1.5 + other.learned[p][s] * 0.5 for s in smile.learned[p]}
                      for p in PARTS}
    save_vector(summed, tmp_path / "sum.safetensors")
    common = ["--aligned", *_common(models)]
    r = runner.invoke(app, ["attribute", str(tmp_path / "face.png"), "-v", f"{vectors / 'smile.safetensors'}:1.5",
                            "-v", f"{vectors / 'other.safetensors'}:0.5", "-o", str(tmp_path / "both.png"), *common])
    assert r.exit_code == 0, r.output
    assert "smile a=1.5, other a=0.5" in r.output
    r = runner.invoke(app, ["attribute", str(tmp_path / "face.png"), "-v", str(tmp_path / "sum.safetensors"),
                            "--alpha", "1", "-o", str(tmp_path / "sum.png"), *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["attribute", str(tmp_path / "face.png"), "-v", f"{vectors / 'smile.safetensors'}:1.5",
                            "-o", str(tmp_path / "smile.png"), *common])
    assert r.exit_code == 0, r.output
    both, want, one = (_read(tmp_path / f"{n}.png").astype(np.int16) for n in ("both", "sum", "smile"))
    assert both.shape == (R, R, 3)
    assert np.abs(both - want).max() <= 1  # each vector's step adds in the latents
    assert np.abs(both - one).max() > 1  # and the second vector matters


def test_classic_on_the_device_with_vgg_weights(vectors, folders, models, tmp_path, monkeypatch):
    """Random VGG-19 weights in a temporary TORCH_HOME make classic DFI run (2 L-BFGS steps)."""
    from pipeline.models.vgg import VGG19Features, vgg_weights_path

    args = ["attribute", str(folders / "photo.png"), "-v", f"{vectors / 'smile.safetensors'}:1",
            "-v", f"{vectors / 'other.safetensors'}:0.5", "--method", "classic", "--iters", "2", "--k", "2",
            "-o", str(tmp_path / "c.png"), "--strip", "0,4", *_common(models)]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    r = runner.invoke(app, args)  # no weights: one line naming the file to put in place
    _one_line_error(r, "VGG-19 ImageNet weights not found", "vgg19-dcbb9e9d.pth")
    torch.manual_seed(0)
    vgg_weights_path().parent.mkdir(parents=True)
    torch.save(VGG19Features().state_dict(), vgg_weights_path())
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "classic" in r.output
    photo = _read(folders / "photo.png")
    assert _read(tmp_path / "c.png").shape == photo.shape
    strip = _read(tmp_path / "c_strip.png")
    tile = 256
    # Tiles: photo, a=0, a=4 (same crop): from z = x, alpha 0 stays nearer the photo than alpha 4.
    y0 = strip.shape[0] - tile - 2
    tiles = [strip[y0 : y0 + tile, 2 + i * (tile + 2) : 2 + i * (tile + 2) + tile].astype(np.int16) for i in range(3)]
    assert np.abs(tiles[1] - tiles[0]).mean() < np.abs(tiles[2] - tiles[0]).mean()


def test_bad_inputs_end_in_one_line(vectors, folders, models, tmp_path):
    from pipeline.dfi.vectors import load_vector, save_vector

    common = _common(models)
    smile = str(vectors / "smile.safetensors")
    out = str(tmp_path / "o.png")
    # dfe attribute: no face, unreadable photo, missing / unreadable / other-profile vectors.
    r = runner.invoke(app, ["attribute", str(folders / "blank.png"), "-v", smile, "-o", out, *common])
    _one_line_error(r, "no face found", "blank.png")
    r = runner.invoke(app, ["attribute", str(folders / "junk.jpg"), "-v", smile, "-o", out, *common])
    _one_line_error(r, "cannot read", "junk.jpg")
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", str(tmp_path / "nope.safetensors"), "-o", out, *common])
    _one_line_error(r, "nope.safetensors not found", "dfe attribute-vector")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", str(tmp_path / "bad.safetensors"), "-o", out, *common])
    _one_line_error(r, "bad.safetensors is not an attribute vector", "dfe attribute-vector")
    v = load_vector(smile)
    v.profile = "small"
    save_vector(v, tmp_path / "small.safetensors")
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", str(tmp_path / "small.safetensors"), "-o", out, *common])
    _one_line_error(r, "small.safetensors was learned with profile 'small'", "--profile small", "dfe attribute-vector")
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", smile, "--method", "magic", "-o", out, *common])
    _one_line_error(r, "unknown method 'magic'")
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", smile, "--blend", "soft", "-o", out, *common])
    _one_line_error(r, "unknown blend 'soft'")
    assert not (tmp_path / "o.png").exists()

    # dfe attribute-vector: empty, face-less and missing example folders.
    vout = str(tmp_path / "v.safetensors")
    r = runner.invoke(app, ["attribute-vector", "--with", str(folders / "empty"), "--without", str(folders / "without"),
                            "-o", vout, *common])
    _one_line_error(r, "empty holds no photos", "--with")
    r = runner.invoke(app, ["attribute-vector", "--with", str(folders / "with"), "--without", str(folders / "nofaces"),
                            "-o", vout, *common])
    _one_line_error(r, "nofaces: none of its 2 photos gives a face", "--without")
    r = runner.invoke(app, ["attribute-vector", "--with", str(tmp_path / "missing"), "--without", str(folders / "without"),
                            "-o", vout, *common])
    _one_line_error(r, "missing is not a folder", "--with")
    assert not (tmp_path / "v.safetensors").exists()


def test_landmark_motion_moves_the_photo_by_the_examples_mean_shift(vectors, folders, models, tmp_path):
    """--motion landmarks takes the move from the vector's examples, not from the renders: a vector
    whose learned steps are zero (the renders do not change) still widens the mouth by its
    examples' mean shift, inside the face only; --motion renders leaves that photo as it was."""
    from pipeline.dfi.vectors import load_vector, save_vector
    from pipeline.editing.edit import FaceDetector, align_image, read_image

    v = load_vector(vectors / "smile.safetensors")
    assert np.allclose(v.landmark_shift, v.examples["with"].landmarks.mean(0) - v.examples["without"].landmarks.mean(0))
    v.learned = {p: {s: torch.zeros_like(t) for s, t in d.items()} for p, d in v.learned.items()}
    widen = np.zeros((68, 2), np.float32)
    widen[48, 0], widen[54, 0] = -3.0, 3.0  # mouth corners 3 aligned px further apart
    v.examples["with"].landmarks = v.examples["without"].landmarks.mean(0, keepdims=True) + widen
    v.examples["with"].faces = v.examples["with"].faces[:1]
    v.examples["with"].files = v.examples["with"].files[:1]
    assert np.allclose(v.landmark_shift, widen, atol=1e-4)
    save_vector(v, tmp_path / "widen.safetensors")
    photo = _read(folders / "photo.png")
    outs = {}
    for motion in ("landmarks", "renders"):
        r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", str(tmp_path / "widen.safetensors"),
                                "--alpha", "1", "--motion", motion, "-o", str(tmp_path / f"{motion}.png"), *_common(models)])
        assert r.exit_code == 0, r.output
        outs[motion] = _read(tmp_path / f"{motion}.png")
    assert np.array_equal(outs["renders"], photo)  # the renders agree: nothing to move
    changed = np.abs(outs["landmarks"].astype(np.int16) - photo).max(axis=2) > 8
    assert changed.any()
    # only round the mouth: its corners in the photo's frame bound where pixels changed
    face = align_image(read_image(folders / "photo.png"), R, FaceDetector(), "photo.png")
    inv = cv2.invertAffineTransform(face.transform)
    corners = face.landmarks[[48, 54]] @ inv[:, :2].T + inv[:, 2]
    ys, xs = np.nonzero(changed)
    scale = np.linalg.norm(corners[1] - corners[0])
    assert xs.min() > corners[0, 0] - scale and xs.max() < corners[1, 0] + scale
    assert abs(ys.mean() - corners[:, 1].mean()) < 0.5 * scale
    r = runner.invoke(app, ["attribute", str(folders / "photo.png"), "-v", str(tmp_path / "widen.safetensors"),
                            "--motion", "sideways", "-o", str(tmp_path / "x.png"), *_common(models)])
    _one_line_error(r, "sideways", "landmarks")


def test_a_vector_learns_with_the_photo_editors_colour_range(vectors, models):
    """`dfe attribute-vector` loads the photo editor, whose colour range rides each photo's colour
    statistics along its appearance codes: they are the photo's, and stay out of the vector."""
    from pipeline.core.profiles import get_profile
    from pipeline.dfi.vectors import learn_vector, load_vector
    from pipeline.editing.colour_norm import STATS_KEY
    from pipeline.models.editor import load_editor

    class WithStats:  # the codes as editing.colour_norm.ColourNormalised returns them
        def __init__(self, editor):
            self.editor, self.device, self.profile = editor, editor.device, editor.profile

        def geometry_from_photo(self, x):
            return self.editor.geometry_from_photo(x)

        def appearance_codes(self, x):
            return {**self.editor.appearance_codes(x), STATS_KEY: torch.zeros(len(x), 17)}

    editor = load_editor(models, get_profile(PROFILE), torch.device("cpu"))
    examples = load_vector(vectors / "smile.safetensors").examples
    plain = learn_vector(editor, examples, parts=("mouth",), spaces=("geometry",), normalise=False)
    wrapped = learn_vector(WithStats(editor), examples, parts=("mouth",), spaces=("geometry",), normalise=False)
    assert set(wrapped.learned) == set(PARTS)
    for p in PARTS:
        for s in ("geometry", "appearance"):
            assert torch.allclose(wrapped.learned[p][s], plain.learned[p][s])
