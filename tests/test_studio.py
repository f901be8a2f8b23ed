"""`dfe studio`: the edit step as functions (no browser), and the page in a real browser.

The browser test starts `dfe studio` on a free 127.0.0.1 port with the one-step micro models
and drives Debian's Chromium headless through Playwright (no browser download). Its
screenshots go to reports/studio/ (printed; run pytest with -s to see the paths).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline import PARTS
from pipeline.core.profiles import part_boxes
from pipeline.editing.edit import EditInputError, FaceDetector, photo_sketch
from pipeline.editing.studio import (
    Studio, canvas_size, canvas_value, find_attribute_vectors, read_attribute_vector, sketch_from_layers,
    sketch_on_canvas, strokes_layer,
)
from tests.helpers_models import PROFILE, models, single_thread  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
R = 128  # the micro profile's aligned size
BOXES = part_boxes(R)
SHOTS = REPO / "reports" / "studio"


def _style():
    from pipeline.data.sketches import SketchesConfig
    from stages.common import config_from

    return replace(config_from("sketches", SketchesConfig).style, randomize=0.0)


@pytest.fixture(scope="module")
def studio(models):
    from pipeline.models.editor import load_editor

    return Studio(load_editor(models, PROFILE), FaceDetector(), _style())


@pytest.fixture(scope="module")
def photos(london, tmp_path_factory):
    """A face, a donor tinted green (a colour no London face has), a text file named .jpg, a
    flat grey picture (no face)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("studio_photos")
    donor = np.asarray(Image.open(london / "neutral" / "004_03.jpg").convert("RGB")).astype(np.float32)
    Image.fromarray(np.clip(donor * np.array([0.4, 1.3, 0.4]), 0, 255).astype(np.uint8)).save(d / "green.png")
    (d / "notes.jpg").write_text("shopping list, not a photo\n" * 20)
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(d / "grey.png")
    return {"face": london / "neutral" / "001_03.jpg", "green": d / "green.png", "text": d / "notes.jpg",
            "grey": d / "grey.png"}


def _stroke_layer(side: int, part: str = "mouth", width: int = 4) -> np.ndarray:
    """A transparent canvas layer with one black stroke across the middle of a part's box."""
    k = side // R
    x, y, s = BOXES[part]
    layer = np.zeros((side, side, 4), np.uint8)
    cv2.line(layer, ((x + 4) * k, (y + s // 2) * k), ((x + s - 4) * k, (y + s // 2) * k), (0, 0, 0, 255), width)
    return layer


def _box_distance(part: str, scale: int = 1) -> np.ndarray:
    """(R*scale)^2 Chebyshev distance (aligned px) of every pixel from a part's box (0 inside)."""
    x, y, s = BOXES[part]
    yy, xx = np.mgrid[: R * scale, : R * scale] / scale
    return np.maximum(np.maximum(x - xx, xx - (x + s)), np.maximum(y - yy, yy - (y + s))).clip(0)


def _region_change(a: np.ndarray, b: np.ndarray, part: str, scale: int = 1) -> float:
    x, y, s = BOXES[part]
    sl = np.s_[y * scale : (y + s) * scale, x * scale : (x + s) * scale]
    return float(np.abs(a[sl].astype(np.int32) - b[sl].astype(np.int32)).mean())


# --------------------------------------------------------------------------- functions


def test_canvas_layers_make_the_sketch():
    base = np.full((R, R), 255, np.uint8)
    base[60, :] = 0
    side = canvas_size(R)
    assert side % R == 0 and side >= 256
    assert np.array_equal(sketch_from_layers(base, []), base)
    assert np.array_equal(sketch_from_layers(base, [np.zeros((side, side, 4), np.uint8)]), base)  # nothing drawn
    out = sketch_from_layers(base, [_stroke_layer(side)])
    changed = out != base
    x, y, s = BOXES["mouth"]
    assert changed.any() and changed[y + s // 2 - 2 : y + s // 2 + 2, x : x + s].sum() == changed.sum()
    assert out[y + s // 2, x + s // 2] < 128  # a dark line in the aligned frame
    white = np.zeros((side, side, 4), np.uint8)
    white[60 * (side // R) - 4 : 60 * (side // R) + 4, :] = 255  # white pen over the photo's own line
    assert (sketch_from_layers(base, [white])[60] > 200).all()
    assert sketch_on_canvas(base, side).shape == (side, side, 3)


def test_the_pages_strokes_make_the_sketch():
    """The page sends its strokes as points (canvas px); the server draws them on the sketch:
    the pen a dark line where it went, the white pen paper over the photo's own line, nothing
    drawn leaves the sketch as it was, and a value that is not strokes is one clear error."""
    import json

    base = np.full((R, R), 255, np.uint8)
    base[60, :] = 0
    side = canvas_size(R)
    k = side / R
    assert strokes_layer("", side) is None and strokes_layer(json.dumps({"side": side, "strokes": []}), side) is None
    pen = {"tool": "pen", "width": 4, "points": [[20 * k, 90 * k], [100 * k, 90 * k]]}
    out = sketch_from_layers(base, [strokes_layer(json.dumps({"side": side, "strokes": [pen]}), side)])
    assert out[90, 30:90].max() < 100 and (out[80] == 255).all() and np.array_equal(out[60], base[60])
    paper = {"tool": "paper", "width": 6, "points": [[0, 60 * k], [side, 60 * k]]}
    out = sketch_from_layers(base, [strokes_layer(json.dumps({"side": side, "strokes": [pen, paper]}), side)])
    assert (out[60, 2:-2] > 200).all() and out[90, 50] < 100  # the photo's own line painted over
    half = sketch_from_layers(base, [strokes_layer(json.dumps({"side": side // 2, "strokes": [
        {"tool": "pen", "width": 2, "points": [[10 * k / 2, 90 * k / 2], [100 * k / 2, 90 * k / 2]]}]}), side)])
    assert half[90, 30:90].max() < 100  # strokes from a canvas of another size land at the same place
    for bad in ("not json", json.dumps({"strokes": [{"tool": "spray", "points": [[1, 2]]}]}),
                json.dumps({"strokes": [{"tool": "pen"}]})):
        with pytest.raises(ValueError, match="the drawing could not be read"):
            strokes_layer(bad, side)
    value = json.loads(canvas_value(base, side))
    assert value["background"].startswith("data:image/png;base64,") and value["strokes"] == []
    assert strokes_layer(json.dumps(value), side) is None  # the server's own value draws nothing
    png = np.frombuffer(__import__("base64").b64decode(value["background"].split(",", 1)[1]), np.uint8)
    assert np.array_equal(cv2.imdecode(png, cv2.IMREAD_GRAYSCALE), sketch_on_canvas(base, side)[..., 0])


def test_open_draws_the_same_sketch_as_dfe_sketch(studio, photos):
    opened = studio.open(photos["face"])
    assert opened.face.face.shape == (R, R, 3) and opened.sketch.shape == (R, R)
    same = photo_sketch(str(photos["face"]), R, studio.style, studio.detector)
    assert np.array_equal(opened.sketch, same)


def test_a_stroke_changes_the_face_where_it_is(studio, photos):
    opened = studio.open(photos["face"])
    before = studio.render(opened)
    assert before.photo.shape == opened.face.photo.shape and before.face.shape == (R, R, 3)
    assert np.array_equal(before.photo, opened.face.photo)  # nothing drawn: the photo itself (editing.compose)
    sketch = sketch_from_layers(opened.sketch, [_stroke_layer(canvas_size(R))])
    after = studio.render(opened, sketch)
    d = np.abs(after.face.astype(np.int32) - before.face.astype(np.int32)).sum(axis=2)
    dist = _box_distance("mouth")
    assert d[dist == 0].mean() > 1, d[dist == 0].mean()  # composed: the photo's own pixels moved, a little added
    assert d[dist > 20].max() == 0  # local: the face away from the stroke is untouched
    assert after.model_seconds > 0 and after.region is not None
    # local=False: the model's own render everywhere (its instance norms reach the whole face)
    whole = studio.render(opened, sketch, local=False)
    assert whole.region is None and not np.array_equal(whole.face, after.face)
    # the photo outside the paste-back mask keeps its pixels
    outside = cv2.warpAffine(np.ones((R, R), np.float32), cv2.invertAffineTransform(opened.face.transform),
                             opened.face.photo.shape[1::-1]) == 0
    assert np.array_equal(after.photo[outside], opened.face.photo[outside])
    small = studio.render(opened, sketch, paste_side=300)
    assert max(small.photo.shape[:2]) == 300


def test_a_stroke_reruns_only_the_parts_it_crosses(studio, photos):
    """Per stroke, the encoders and generators of the parts whose box it crosses run again;
    the others' latents and features come from the cache, and the face is the one a whole
    forward pass gives."""
    opened = studio.open(photos["face"])
    studio.render(opened)  # the photo's own render fills the cache
    runs = dict(opened.parts.runs)
    assert runs == {p: 2 for p in PARTS}  # each part: one encoding, one generator run
    sketch = sketch_from_layers(opened.sketch, [_stroke_layer(canvas_size(R))])
    cached = studio.render(opened, sketch)
    reran = {p: opened.parts.runs[p] - runs[p] for p in PARTS}
    touched = {p for p, (bx, by, bs) in BOXES.items() if (sketch != opened.sketch)[by:by + bs, bx:bx + bs].any()}
    assert "mouth" in touched and "eye1" not in touched
    assert reran == {p: 2 if p in touched else 0 for p in PARTS}, (reran, touched)
    fresh = replace(opened, base=None, parts=type(opened.parts)())  # no cache: every part from scratch
    assert np.array_equal(studio.render(fresh, sketch).face, cached.face)


def test_the_part_cache_keeps_the_colour_range(studio, photos):
    """`dfe studio` loads its editor with the training faces' colour range: a cached render is
    moved back to the photo's light exactly as the whole forward pass is."""
    from pipeline.core.tensors import faces_to_tensor, tensor_to_faces
    from pipeline.editing.colour_norm import ColourNormalised, colour_range
    from pipeline.editing.edit import _sketch_tensor
    from pipeline.editing.studio import PartCache

    opened = studio.open(photos["face"])
    green = studio.donor(photos["green"]).face
    r = colour_range(np.stack([green] * 4), k=0.1)  # a range the London photo lies far outside
    ranged = Studio(ColourNormalised(studio.editor, r["low"], r["high"]), studio.detector, studio.style)
    codes = ranged.editor.appearance_codes(faces_to_tensor(opened.face.face[None], ranged.editor.device))
    sketch = sketch_from_layers(opened.sketch, [_stroke_layer(canvas_size(R))])
    whole = tensor_to_faces(ranged.editor.render(ranged.editor.geometry_from_sketch(
        _sketch_tensor(sketch, ranged.editor.device)), codes))[0]
    plain = tensor_to_faces(studio.editor.render(studio.editor.geometry_from_sketch(
        _sketch_tensor(sketch, studio.editor.device)), {p: codes[p] for p in PARTS}))[0]
    assert not np.array_equal(whole, plain)  # the range moved this render back
    cache = PartCache()
    ranged._forward(opened.sketch, codes, [], cache)
    assert np.array_equal(ranged._forward(sketch, codes, [], cache), whole)


def test_part_appearance_changes_that_part(studio, photos):
    opened = studio.open(photos["face"])
    own = studio.render(opened)
    green = studio.donor(photos["green"])
    mouth = studio.render(opened, donors={"mouth": green})
    change = {p: _region_change(mouth.face, own.face, p) for p in ("eye1", "eye2", "mouth")}
    assert change["mouth"] > 3 and change["mouth"] > 2 * max(change["eye1"], change["eye2"]), change
    codes = studio.appearance(opened, {"all": green, "eyes": None, "mouth": opened_donor(opened)})
    assert torch.equal(codes["eye1"], green.codes["eye1"]) and torch.equal(codes["mouth"], opened.codes["mouth"])
    with pytest.raises(ValueError, match="unknown appearance slots"):
        studio.appearance(opened, {"lips": green})


def opened_donor(opened):
    from pipeline.editing.studio import Donor

    return Donor(opened.name, opened.face.face, opened.codes)


def _dfi_vectors_file(studio, london, path: Path) -> Path:
    """A vectors file made as the dfi stage makes outputs/dfi/vectors.safetensors."""
    from safetensors.torch import save_file

    from pipeline.dfi.interpolation import learned_attribute_vectors
    from pipeline.models.editor import encode
    from tests.helpers_models import aligned_london

    faces, _ = aligned_london([london / "neutral" / "002_03.jpg", london / "smiling" / "002_08.jpg",
                               london / "neutral" / "003_03.jpg", london / "smiling" / "003_08.jpg"], R)
    geo, app = encode(studio.editor, faces, 4, torch.device("cpu"), "encode")
    vectors = learned_attribute_vectors({p: v[1::2] for p, v in geo.items()}, {p: v[::2] for p, v in geo.items()},
                                        {p: v[1::2] for p, v in app.items()}, {p: v[::2] for p, v in app.items()},
                                        normalise=False)
    flat = {f"{p}.{s}": v.contiguous() for p, d in vectors.items() for s, v in d.items()}
    save_file(flat, str(path), metadata={"alphas": str([0.0, 1.0, 2.0, 3.0]), "parts": "mouth,nose,bg"})
    return path


def test_attribute_slider_reads_the_dfi_stage_vectors(studio, photos, london, tmp_path):
    folder = tmp_path / "vectors"
    folder.mkdir()
    _dfi_vectors_file(studio, london, folder / "smile.safetensors")
    (folder / "broken.safetensors").write_bytes(b"not safetensors")
    from safetensors.torch import save_file

    save_file({"mouth.geometry": torch.zeros(3, 3)}, str(folder / "other_profile.safetensors"))
    found, skipped = find_attribute_vectors(folder, studio.latent_shapes())
    assert [v.name for v in found] == ["smile"]
    assert len(skipped) == 2 and any("not a safetensors file" in s for s in skipped)
    assert any("another profile" in s for s in skipped), skipped
    smile = found[0]
    assert smile.parts == ("mouth", "nose", "bg") and smile.limit == 3.0 and set(smile.vectors) == set(PARTS)
    studio.vectors = found
    try:
        opened = studio.open(photos["face"])
        plain = studio.render(opened)
        assert np.array_equal(studio.render(opened, alphas={"smile": 0.0}).face, plain.face)
        smiled = studio.render(opened, alphas={"smile": 2.0})
        assert _region_change(smiled.face, plain.face, "mouth") > 0.3  # composed into the photo
        with pytest.raises(ValueError, match="unknown attribute vectors"):
            studio.render(opened, alphas={"frown": 1.0})
    finally:
        studio.vectors = []
    named = read_attribute_vector(_dfi_vectors_file(studio, london, tmp_path / "vectors.safetensors"))
    assert named.name == tmp_path.name  # the dfi stage's file name says nothing: its folder's does


def test_a_slider_with_a_landmark_shift_moves_the_photos_own_mouth(studio, photos, london, tmp_path):
    """As `dfe attribute --motion landmarks`: a vector's examples' mean landmark shift moves the
    photo even where its learned steps change no render; without a shift nothing moves."""
    from dataclasses import replace

    smile = read_attribute_vector(_dfi_vectors_file(studio, london, tmp_path / "smile.safetensors"))
    still = replace(smile, vectors={p: {s: torch.zeros_like(t) for s, t in d.items()} for p, d in smile.vectors.items()})
    widen = np.zeros((68, 2), np.float32)
    widen[48, 0], widen[54, 0] = -3.0, 3.0
    try:
        opened = studio.open(photos["face"])
        plain = studio.render(opened)
        studio.vectors = [still]
        assert np.array_equal(studio.render(opened, alphas={"smile": 1.0}).face, plain.face)
        studio.vectors = [replace(still, landmark_shift=widen)]
        moved = studio.render(opened, alphas={"smile": 1.0})
        assert _region_change(moved.face, plain.face, "mouth") > 0.3
        assert np.array_equal(moved.face[:40], plain.face[:40])  # the forehead and eyes keep their pixels
    finally:
        studio.vectors = []


def test_messages_for_bad_photos_and_missing_models(studio, photos, tmp_path):
    with pytest.raises(EditInputError, match=r"^cannot read notes\.jpg: .*choose a photo"):
        studio.open(photos["text"], "notes.jpg")
    with pytest.raises(EditInputError, match=r"^no face found in grey\.png: choose a photo with a face"):
        studio.open(photos["grey"], "grey.png")
    with pytest.raises(EditInputError, match="no face found in grey.png"):
        studio.donor(photos["grey"], "grey.png")
    from stages.studio import make_studio

    broken = make_studio(str(tmp_path / "nothing"), PROFILE, "cpu", "fp32", "auto", 1, 512, 0.06, None, None)
    assert broken.problem is not None and "missing: run `dvc repro train_sketch_ae@eye1`" in broken.problem
    with pytest.raises(EditInputError, match="dvc repro train_sketch_ae@eye1"):
        broken.open(photos["face"])
    pytest.importorskip("gradio", reason='the studio extra is not installed: pip install -e ".[studio]"')
    from pipeline.editing.studio import build_app

    build_app(broken)  # the page still builds, saying what is missing


def test_save_writes_the_photo_and_sketches(studio, photos):
    from pipeline.editing.edit import read_image

    opened = studio.open(photos["face"])
    out = studio.render(opened, sketch_from_layers(opened.sketch, [_stroke_layer(canvas_size(R))]), paste_side=256)
    paths = studio.save(opened, out)
    assert [p.name for p in paths] == ["001_03_edited.png", "001_03_sketch.png", "001_03_sketch_in_photo.png"]
    assert read_image(paths[0]).shape == opened.face.photo.shape  # full size, not the preview's
    assert read_image(paths[1]).shape[:2] == (R, R)
    assert read_image(paths[2]).shape[:2] == opened.face.photo.shape[:2]


def test_studio_without_gradio_names_the_install(monkeypatch):
    import typer
    from typer.testing import CliRunner

    from stages.studio import studio_cmd

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    app = typer.Typer()
    app.command("studio")(studio_cmd)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["studio"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[studio]"' in lines[0], result.output


def test_benchmark_prints_its_table(london, tmp_path):
    """With no trained weights at --models the benchmark times random ones and says so (a
    checkout where `dvc repro` has run has trained ones in models/: point away from them)."""
    import subprocess

    env = {**os.environ, "DFE_LONDON_DIR": str(london)}
    out = subprocess.run([sys.executable, "-m", "benchmarks.studio", "--no-browser", "--paper-iters", "0",
                          "--updates", "1", "--models", str(tmp_path / "none")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for what in ("models per update, every part, 1 thread", "models per stroke, parts it crosses, 1 thread",
                 "server step per stroke, 1 thread"):
        assert re.search(rf"^small\s+random\s+{what}\(s\)\s+\d+\s+\d+\s+1$", out.stdout, re.M), out.stdout
    assert re.search(r"^models per stroke / per update with every part \(small, 1 thread\(s\)\): \d\.\d\d$",
                     out.stdout, re.M), out.stdout


# --------------------------------------------------------------------------- the page in a browser


@pytest.fixture(scope="module")
def server(models, london, studio, tmp_path_factory):
    """`dfe studio` on a free local port: micro models, the London faces, a smile slider."""
    pytest.importorskip("gradio", reason='the studio extra is not installed: pip install -e ".[studio]"')
    pytest.importorskip("playwright.sync_api", reason='Playwright is not installed: pip install -e ".[studio]"')
    from benchmarks.studio import chromium_path, start_studio

    if chromium_path() is None:
        pytest.skip("no Chromium to drive: apt-get install -y chromium chromium-driver (.ci/run installs it)")
    vectors = tmp_path_factory.mktemp("studio_vectors")
    _dfi_vectors_file(studio, london, vectors / "smile.safetensors")
    log = tmp_path_factory.mktemp("studio_server") / "server.log"
    try:  # tiny nets: one thread each for the server and the browser on a shared 2-core machine
        with start_studio(models, PROFILE, log, "--faces", str(london), "--vectors", str(vectors), threads=1) as url:
            yield url, log
    except RuntimeError as e:
        pytest.fail(str(e))


def test_the_page_in_a_browser(server, photos):
    from benchmarks.studio import PHOTO_INPUT, browser_page, draw_stroke, line, new_preview, open_photo, preview

    url, log = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    shots = {}

    with browser_page() as page:
        def status() -> str:
            return page.locator("#studio-status").inner_text()

        def shot(name: str) -> None:
            shots[name] = SHOTS / f"{name}.png"
            page.screenshot(path=str(shots[name]), full_page=True)

        src0, p0 = open_photo(page, url, photos["face"])
        assert page.locator("#attribute-0").count() == 1  # the smile slider
        scale = p0.shape[0] // R
        shot("before_stroke")

        # One stroke across the mouth, through the canvas, where the sketch shows it.
        x, y, s = BOXES["mouth"]
        t = time.perf_counter()
        lifted = draw_stroke(page, R, canvas_size(R), line((x + 4, y + s / 2), (x + s - 4, y + s / 2)))
        src1, p1 = new_preview(page, src0)
        print(f"\nstroke drawn in {lifted - t:.1f} s; new preview {time.perf_counter() - lifted:.2f} s after the pen "
              f"lifted ({status()})")
        d = np.abs(p1.astype(np.int32) - p0.astype(np.int32)).sum(axis=2)
        dist = _box_distance("mouth", scale)
        inside, far = d[dist == 0].mean(), d[dist > 24].max()
        print(f"preview change: mean {inside:.1f} inside the mouth box, max {far} beyond 24 px of it")
        assert inside > 1 and far == 0, (inside, far)  # composed: the photo moved near the stroke, nowhere else
        assert page.locator("#sketch canvas").get_attribute("data-strokes") == "1"

        # Undo takes the stroke back (the photo again); drawn again, the same edit.
        page.locator("#sketch [data-act=undo]").click()
        src_u, p_u = new_preview(page, src1)
        assert np.array_equal(p_u, p0) and page.locator("#sketch canvas").get_attribute("data-strokes") == "0"
        draw_stroke(page, R, canvas_size(R), line((x + 4, y + s / 2), (x + s - 4, y + s / 2)))
        src1, p1_again = new_preview(page, src_u)
        assert np.array_equal(p1_again, p1)
        # The eraser rubbed over the stroke's middle takes it away; the pen brings it back.
        page.locator("#sketch [data-tool=eraser]").click()
        draw_stroke(page, R, canvas_size(R), line((x + s / 2 - 2, y + s / 2 - 2), (x + s / 2 + 2, y + s / 2 + 2), 2))
        src_e, p_e = new_preview(page, src1)
        assert np.array_equal(p_e, p0) and page.locator("#sketch canvas").get_attribute("data-strokes") == "0"
        page.locator("#sketch [data-tool=pen]").click()
        draw_stroke(page, R, canvas_size(R), line((x + 4, y + s / 2), (x + s - 4, y + s / 2)))
        src1, _ = new_preview(page, src_e)
        shot("after_stroke")

        # The mouth's appearance from a green-tinted face.
        page.locator("#appearance-mouth input[type=file]").set_input_files(str(photos["green"]))
        src2, p2 = new_preview(page, src1)
        change = {p: round(_region_change(p2, p1, p, scale), 2) for p in ("eye1", "eye2", "mouth")}
        print(f"mouth appearance: mean change per box {change}")
        assert change["mouth"] > 3 and change["mouth"] > 2 * max(change["eye1"], change["eye2"]), change
        shot("mouth_appearance")

        # Bad uploads: one message in the page, the page keeps working.
        page.locator(PHOTO_INPUT).set_input_files(str(photos["text"]))
        page.wait_for_function("() => document.querySelector('#studio-status').innerText.includes('cannot read')")
        assert "cannot read notes.jpg" in status() and "choose a photo" in status(), status()
        shot("error_not_an_image")
        page.locator(PHOTO_INPUT).set_input_files(str(photos["grey"]))
        page.wait_for_function("() => document.querySelector('#studio-status').innerText.includes('no face')")
        assert "no face found in grey.png" in status(), status()
        shot("error_no_face")
        assert preview(page)[0] == src2  # the edit on screen is kept

        # Clear: back to the photo's own sketch, so the preview loses the stroke and only it.
        page.locator("#clear").click()
        src3, p3 = new_preview(page, src2)
        page.wait_for_selector("#sketch canvas[data-strokes='0']")  # the page's strokes are gone too
        d = np.abs(p3.astype(np.int32) - p2.astype(np.int32)).sum(axis=2)
        assert d[dist == 0].mean() > 1 and d[dist > 24].max() == 0

        # Save: the full-size edited photo and the sketches to download.
        page.locator("#save").click()
        page.wait_for_function("() => document.querySelector('#studio-status').innerText.includes('saved')")
        assert status() == "saved 001_03_edited.png, 001_03_sketch.png, 001_03_sketch_in_photo.png", status()
        assert "001_03_sketch_in_photo" in page.locator("#downloads").inner_text()

    out = Path("/tmp/studio_shots")
    out.mkdir(exist_ok=True)
    for name, path in shots.items():
        shutil.copy(path, out / path.name)
    print("screenshots: " + ", ".join(str(p) for p in shots.values()) + f" (copies in {out})")
    # No error in the studio's own code (a browser closing mid-upload may log a disconnect).
    text = log.read_text()
    assert not re.search(r'File "[^"]*/(pipeline|stages)/', text), text[-3000:]


def test_studio_with_bf16_fusion_runs_the_fusion_net_in_bf16(models, photos):
    """`dfe studio --dtype bf16-fusion`: the part nets in fp32, the fusion net in bf16, and a
    stroke's preview close to the fp32 studio's."""
    from stages.studio import make_studio

    quick = make_studio(str(models), PROFILE, "cpu", "bf16-fusion", "synth", 1, 512, 0.06, None, None)
    exact = make_studio(str(models), PROFILE, "cpu", "fp32", "synth", 1, 512, 0.06, None, None)
    assert quick.problem is None, quick.problem
    assert next(quick.editor.fusion.parameters()).dtype == torch.bfloat16
    assert next(quick.editor.parts["mouth"]["generator"].parameters()).dtype == torch.float32
    sketch = sketch_from_layers(exact.open(photos["face"]).sketch, [_stroke_layer(canvas_size(R))])
    a = quick.render(quick.open(photos["face"]), sketch).face.astype(np.float64)
    b = exact.render(exact.open(photos["face"]), sketch).face.astype(np.float64)
    mse = np.mean((a - b) ** 2)
    assert 0 < mse and 10 * np.log10(255.0**2 / mse) > 30, mse
