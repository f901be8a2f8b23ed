"""`dfe edit` / `dfe sketch` on real 1024 px London photos with one-step micro models."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from pipeline.editing.edit import EditRequest, FaceDetector, run_edit
from stages.edit import edit_cmd, sketch_cmd
from tests.helpers_models import PROFILE, aligned_london, models, single_thread  # noqa: F401  (fixtures)

app = typer.Typer()
app.command("edit")(edit_cmd)
app.command("sketch")(sketch_cmd)
runner = CliRunner()


@pytest.fixture(scope="module")
def photos(london):
    return {"geo": london / "neutral" / "001_03.jpg", "app": london / "neutral" / "004_03.jpg",
            "mouth": london / "smiling" / "010_08.jpg"}


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def editor(models):
    from pipeline.models.editor import load_editor

    return load_editor(models, PROFILE)


def _read(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img[..., ::-1] if img.ndim == 3 else img


def _square_footprint(transform: np.ndarray, shape: tuple[int, int], r: int) -> np.ndarray:
    """Photo pixels the aligned R x R square can reach, bilinear spill over its edge included."""
    inv = cv2.invertAffineTransform(transform)
    cover = cv2.warpAffine(np.ones((r, r), np.float32), inv, (shape[1], shape[0]), flags=cv2.INTER_LINEAR)
    return cover > 0


def test_edit_pastes_into_the_photo(editor, detector, photos):
    from pipeline.editing.edit import read_image

    req = EditRequest(str(photos["geo"]), str(photos["app"]), {"mouth": str(photos["mouth"])})
    res = run_edit(req, editor, detector)
    src = read_image(photos["geo"])
    assert res.image.shape == src.shape
    assert res.aligned.shape == (128, 128, 3)
    inside = _square_footprint(res.transform, src.shape[:2], 128)
    assert 0.02 < inside.mean() < 0.9
    assert np.array_equal(res.image[~inside], src[~inside])  # untouched outside the mask
    changed = np.abs(res.image.astype(np.int16) - src).max(axis=2) > 0
    assert changed[inside].mean() > 0.2
    # The mouth donor matters: a different mouth appearance changes the result.
    other = run_edit(EditRequest(str(photos["geo"]), str(photos["app"])), editor, detector)
    assert np.abs(other.aligned.astype(np.int16) - res.aligned).max() > 0


def test_cli_edit_aligned_and_sketch_roundtrip(models, photos, tmp_path):
    faces, _ = aligned_london([photos["geo"], photos["app"]], 256)
    for name, face in zip(("geo.png", "app.png"), faces):
        cv2.imwrite(str(tmp_path / name), face[..., ::-1])
    common = ["--profile", PROFILE, "--models", str(models), "--device", "cpu"]
    r = runner.invoke(app, ["edit", str(tmp_path / "geo.png"), "-a", str(tmp_path / "app.png"),
                            "--aligned", "-o", str(tmp_path / "out.png"), *common])
    assert r.exit_code == 0, r.output
    assert _read(tmp_path / "out.png").shape == (128, 128, 3)

    r = runner.invoke(app, ["sketch", str(photos["geo"]), "-o", str(tmp_path / "sk.png"), "--profile", PROFILE])
    assert r.exit_code == 0, r.output
    sk = _read(tmp_path / "sk.png")
    assert sk.shape == (128, 128) and (sk < 128).mean() > 0.01 and (sk > 200).mean() > 0.5

    # An aligned sketch as the main input: geometry from E_sketch; without --aligned it is refused.
    r = runner.invoke(app, ["edit", str(tmp_path / "sk.png"), "-a", str(tmp_path / "app.png"), "--aligned",
                            "-o", str(tmp_path / "drawn.png"), *common])
    assert r.exit_code == 0, r.output
    assert _read(tmp_path / "drawn.png").shape == (128, 128, 3)
    r = runner.invoke(app, ["edit", str(tmp_path / "sk.png"), "-a", str(photos["app"]), "-o", str(tmp_path / "x.png"), *common])
    assert r.exit_code == 2 and "looks like a sketch" in r.output

    r = runner.invoke(app, ["sketch", str(photos["geo"]), "-o", str(tmp_path / "skp.png"), "--in-photo-frame",
                            "--profile", PROFILE])
    assert r.exit_code == 0, r.output
    skp = _read(tmp_path / "skp.png")
    assert skp.shape == _read(photos["geo"]).shape[:2]
    assert skp[0, 0] == 255 and skp[-1, -1] == 255 and (skp < 128).any()

    # The photo-frame sketch goes back in as the geometry of an edit of the same photo.
    r = runner.invoke(app, ["edit", str(photos["geo"]), "-a", str(photos["app"]), "--geometry-sketch",
                            str(tmp_path / "skp.png"), "-o", str(tmp_path / "fromsketch.png"), *common])
    assert r.exit_code == 0, r.output
    assert _read(tmp_path / "fromsketch.png").shape == _read(photos["geo"]).shape


def test_cli_errors_name_the_file(models, photos, tmp_path):
    common = ["--profile", PROFILE, "--models", str(models), "--device", "cpu"]
    flat = tmp_path / "blank_wall.png"
    cv2.imwrite(str(flat), np.full((300, 300, 3), 128, np.uint8))
    r = runner.invoke(app, ["edit", str(flat), "-a", str(photos["app"]), "-o", str(tmp_path / "o.png"), *common])
    assert r.exit_code == 2 and "no face found" in r.output and "blank_wall.png" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)

    junk = tmp_path / "not_a_photo.jpg"
    junk.write_bytes(b"hello, not a JPEG\n" * 10)
    r = runner.invoke(app, ["edit", str(photos["geo"]), "-a", str(junk), "-o", str(tmp_path / "o.png"), *common])
    assert r.exit_code == 2 and "not_a_photo.jpg" in r.output and "not an image" in r.output

    r = runner.invoke(app, ["sketch", str(flat), "-o", str(tmp_path / "s.png"), "--profile", PROFILE])
    assert r.exit_code == 2 and "blank_wall.png" in r.output

    r = runner.invoke(app, ["edit", str(photos["geo"]), "-a", str(photos["app"]), "-o", str(tmp_path / "o.png"),
                            "--profile", PROFILE, "--models", str(tmp_path / "nomodels")])
    assert r.exit_code == 2 and "train_sketch_ae" in r.output
    assert not (tmp_path / "o.png").exists()

    r = runner.invoke(app, ["edit", str(photos["geo"]), "-a", str(photos["app"]), "-p", "ear=x.jpg",
                            "-o", str(tmp_path / "o.png"), *common])
    assert r.exit_code == 2 and "ear=x.jpg" in r.output


def test_edit_with_the_photos_own_sketch_gives_back_the_photo_and_a_stroke_changes_only_its_neighbourhood(
        models, photos, tmp_path):
    """The composition (the default): `dfe sketch --in-photo-frame` records how it drew the
    sketch; fed back unedited it returns the photo bit for bit; one stroke changes the photo
    only near the stroke; `--render full` pastes the networks' whole render instead."""
    from pipeline.core.io import png_text
    from pipeline.editing.edit import SKETCH_RECORD

    common = ["--profile", PROFILE, "--models", str(models), "--device", "cpu"]
    sk = tmp_path / "own.png"
    r = runner.invoke(app, ["sketch", str(photos["geo"]), "-o", str(sk), "--in-photo-frame", "--profile", PROFILE])
    assert r.exit_code == 0, r.output
    assert '"sketcher": "synth"' in png_text(sk)[SKETCH_RECORD]
    photo = _read(photos["geo"])
    r = runner.invoke(app, ["edit", str(photos["geo"]), "-a", str(photos["geo"]), "-s", str(sk),
                            "-o", str(tmp_path / "same.png"), *common])
    assert r.exit_code == 0, r.output
    assert "as recorded in the sketch" in r.output
    assert np.array_equal(_read(tmp_path / "same.png"), photo)

    drawn = _read(sk).copy()
    h, w = drawn.shape
    y, x0, x1 = int(h * 0.62), int(w * 0.44), int(w * 0.56)  # a stroke across the mouth
    cv2.line(drawn, (x0, y), (x1, y + 6), 0, max(2, w // 200))
    cv2.imwrite(str(tmp_path / "stroke.png"), drawn)
    r = runner.invoke(app, ["edit", str(photos["geo"]), "-a", str(photos["geo"]), "-s", str(tmp_path / "stroke.png"),
                            "-o", str(tmp_path / "stroke_out.png"), *common])
    assert r.exit_code == 0, r.output
    assert "no record in the sketch" in r.output  # cv2 wrote it: the record is gone, the default is said
    out = _read(tmp_path / "stroke_out.png")
    changed = np.abs(out.astype(np.int16) - photo).max(axis=2) > 0
    far = np.ones_like(changed)
    far[y - int(0.2 * h):y + int(0.2 * h), x0 - int(0.2 * w):x1 + int(0.2 * w)] = False
    assert not changed[far].any()  # far from the stroke: the photo's own pixels

    r = runner.invoke(app, ["edit", str(photos["geo"]), "-a", str(photos["geo"]), "-s", str(sk), "--render", "full",
                            "-o", str(tmp_path / "full.png"), *common])
    assert r.exit_code == 0, r.output
    assert (np.abs(_read(tmp_path / "full.png").astype(np.int16) - photo).max(axis=2) > 0).mean() > 0.02
    r = runner.invoke(app, ["edit", str(photos["geo"]), "-a", str(photos["geo"]), "--render", "pasted",
                            "-o", str(tmp_path / "x.png"), *common])
    assert r.exit_code == 2 and "compose or full" in r.output


def test_one_edits_renders_share_their_work_and_give_what_each_render_alone_gives(editor, photos):
    """`dfe edit -s` renders the edit, R0 and R1: through one EditRenders the parts a mouth
    stroke left alone are encoded and generated once per appearance, the edit and R1 are one
    render when the colours are the photo's own, and every render is the one it gives alone."""
    from pipeline.editing.edit import edit_aligned
    from pipeline.editing.renders import EditRenders

    r = editor.profile.resolution
    face, other = aligned_london([photos["geo"], photos["app"]], r)[0]
    s0 = np.full((r, r), 255, np.uint8)
    cv2.ellipse(s0, (r // 2, r // 2), (r // 3, int(r * 0.42)), 0, 0, 360, 0, 1)  # a face outline
    x, y, size = editor.boxes["mouth"]
    nose_bottom = editor.boxes["nose"][1] + editor.boxes["nose"][2]
    row = max(y + (3 * size) // 4, nose_bottom + 2)
    assert row < y + size, "the stroke must lie in the mouth's box, below the nose's"
    s1 = s0.copy()
    cv2.line(s1, (x + size // 4, row), (x + (3 * size) // 4, row), 0, 1)

    calls = [(face, face, s1), (face, None, s0), (face, None, s1)]  # the edit, R0, R1 (own colours)
    alone = [edit_aligned(editor, a, geometry_photo=g, geometry_sketch=s) for a, g, s in calls]
    renders = EditRenders(editor)
    shared = [edit_aligned(editor, a, geometry_photo=g, geometry_sketch=s, renders=renders) for a, g, s in calls]
    assert all(np.array_equal(a, b) for a, b in zip(alone, shared))
    assert not np.array_equal(shared[1], shared[2])  # the stroke changed the render
    assert renders.forward_passes == 2  # R1 is the edit
    # s1, then s0: the eyes and nose encoded and generated once; mouth and bg twice each
    assert {p: renders.parts.runs[p] for p in ("eye1", "eye2", "nose")} == {"eye1": 2, "eye2": 2, "nose": 2}
    assert renders.parts.runs["mouth"] == renders.parts.runs["bg"] == 4

    swap = EditRenders(editor)  # another photo's colours: three renders, the geometry still shared
    swapped = edit_aligned(editor, other, geometry_photo=face, geometry_sketch=s1, renders=swap)
    assert np.array_equal(swapped, edit_aligned(editor, other, geometry_sketch=s1))
    for a, g, s in calls[1:]:
        edit_aligned(editor, a, geometry_photo=g, geometry_sketch=s, renders=swap)
    assert swap.forward_passes == 3 and swap.parts.runs["eye1"] == 3  # one encoding, two codes


def _psnr_against_fp32(dtype: str, models, photos, tmp_path) -> float:
    """PSNR of `dfe edit --dtype DTYPE` (the whole render, aligned input) against `--dtype fp32`."""
    outs = {}
    for name in ("fp32", dtype):
        out = tmp_path / f"{name}.png"
        r = runner.invoke(app, ["edit", str(photos["geo"]), "-a", str(photos["app"]), "--render", "full", "--aligned",
                                "--dtype", name, "-o", str(out), "--profile", PROFILE, "--models", str(models),
                                "--device", "cpu"])
        assert r.exit_code == 0, r.output
        outs[name] = _read(out).astype(np.float64)
    mse = np.mean((outs["fp32"] - outs[dtype]) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_bf16_fusion_runs_only_the_fusion_net_in_bf16_and_stays_close_to_fp32(models, photos, tmp_path):
    """--dtype bf16-fusion: the part nets stay fp32, the fusion net runs in bf16; the edit is
    near fp32's (the point of the option) and not identical (bf16 really ran)."""
    import torch

    from pipeline.core.config import resolve_dtype, resolve_fusion_dtype
    from pipeline.models.editor import load_editor

    assert (resolve_dtype("bf16-fusion", "cpu"), resolve_fusion_dtype("bf16-fusion", "cpu")) == \
        (torch.float32, torch.bfloat16)
    assert resolve_fusion_dtype("fp32", "cpu") is None
    # auto: fp32 on a CPU; on CUDA the fusion net alone in bf16 (all-bf16 was slower and 34 dB there)
    assert (resolve_dtype("auto", "cpu"), resolve_fusion_dtype("auto", "cpu")) == (torch.float32, None)
    assert (resolve_dtype("auto", "cuda"), resolve_fusion_dtype("auto", "cuda")) == (torch.float32, torch.bfloat16)
    assert (resolve_dtype("bf16", "cuda"), resolve_fusion_dtype("bf16", "cuda")) == (torch.bfloat16, None)
    editor = load_editor(models, PROFILE, fusion_dtype=torch.bfloat16)
    assert next(editor.fusion.parameters()).dtype == torch.bfloat16
    assert next(editor.parts["mouth"]["generator"].parameters()).dtype == torch.float32

    assert 30 < _psnr_against_fp32("bf16-fusion", models, photos, tmp_path) < float("inf")
    r = runner.invoke(app, ["edit", str(photos["geo"]), "-a", str(photos["geo"]), "--dtype", "fp16", "-o", str(tmp_path / "x.png"),
                            "--profile", PROFILE, "--models", str(models), "--device", "cpu"])
    assert r.exit_code != 0 and "bf16-fusion" in r.output


def test_bf16_mixed_runs_the_fusion_net_and_the_residual_blocks_in_bf16(models, photos, tmp_path):
    """--dtype bf16-mixed: the fusion net and every residual block of the part nets in bf16, the
    stems, up/down-sampling and heads in fp32; the edit stays near fp32's and is not identical."""
    import torch

    from pipeline.core.config import resolve_block_dtype, resolve_dtypes
    from pipeline.models.editor import load_editor
    from pipeline.models.networks import ResBlock

    assert resolve_dtypes("bf16-mixed", "cpu") == (torch.float32, torch.bfloat16, torch.bfloat16)
    assert resolve_dtypes("bf16", "cpu") == (torch.bfloat16, None, None)
    assert resolve_dtypes("auto", "cuda") == (torch.float32, torch.bfloat16, None)
    assert all(resolve_block_dtype(d, dev) is None for d in ("fp32", "bf16", "bf16-fusion", "auto")
               for dev in ("cpu", "cuda"))
    editor = load_editor(models, PROFILE, fusion_dtype=torch.bfloat16, block_dtype=torch.bfloat16)
    assert next(editor.fusion.parameters()).dtype == torch.bfloat16
    for name in ("image_encoder", "sketch_encoder", "generator"):
        net = editor.parts["mouth"][name]
        blocks = [m for m in net.modules() if isinstance(m, ResBlock)]
        assert blocks and all(b.branch_dtype == torch.bfloat16 for b in blocks)
        in_blocks = {id(p) for b in blocks for p in b.parameters()}
        others = [p for p in net.parameters() if id(p) not in in_blocks]
        assert others and all(p.dtype == torch.float32 for p in others), name
        assert all(p.dtype == torch.bfloat16 for b in blocks for p in b.parameters())
    editor.cast(torch.float32)  # a later cast of the whole editor undoes it
    assert editor.block_dtype is None and all(b.branch_dtype is None for b in editor.parts["bg"]["generator"].modules()
                                              if isinstance(b, ResBlock))

    assert 30 < _psnr_against_fp32("bf16-mixed", models, photos, tmp_path) < float("inf")


def test_bf16_on_a_cpu_that_emulates_it_is_named_in_one_line(monkeypatch):
    """Where bf16 is emulated (no avx512_bf16, no AMX: slower than fp32, not faster) every bf16
    dtype says so; fp32, auto, CUDA and CPUs with native bf16 stay quiet."""
    import torch

    from pipeline.core.config import emulated_bf16_warning, native_bf16

    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda native=native: native, raising=False)
        assert native_bf16("cpu") is native and native_bf16("cuda")
        for dtype in ("bf16", "bf16-fusion", "bf16-mixed"):
            line = emulated_bf16_warning(dtype, "cpu")
            assert (line is None) if native else (f"--dtype {dtype}" in line and "--dtype fp32" in line and "\n" not in line)
            assert emulated_bf16_warning(dtype, "cuda") is None
        assert emulated_bf16_warning("fp32", "cpu") is None and emulated_bf16_warning("auto", "cpu") is None
