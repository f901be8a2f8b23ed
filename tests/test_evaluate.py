"""The evaluate stage on a tiny test split of real aligned London faces with one-step micro models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.evaluation.evaluate import PLOT_FILES, EvalConfig, evaluate, swap_pairs
from pipeline.evaluation.metrics import GATES
from pipeline.core.io import save_csv, save_npy
from tests.helpers_models import PROFILE, aligned_london, models, single_thread  # noqa: F401  (fixtures)

PHOTOS = [("neutral", "001_03"), ("neutral", "004_03"), ("smiling", "010_08"), ("smiling", "001_08")]
TRAIN = [("neutral", "002_03"), ("smiling", "002_08"), ("neutral", "003_03"), ("smiling", "003_08")]
R = 128


@pytest.fixture(scope="module")
def split(tmp_path_factory, london):
    """data/aligned + data/sketches + data/components/{train,test} for 4 + 4 faces; test rows
    shuffled against the aligned arrays so `source_row` must be followed."""
    root = tmp_path_factory.mktemp("evaldata")
    faces, lms = aligned_london([london / label / f"{id_}.jpg" for label, id_ in PHOTOS + TRAIN], R)
    order = np.array([2, 0, 3, 1, 4, 5, 6, 7])  # aligned row k holds (PHOTOS + TRAIN)[order[k]]
    save_npy(root / "aligned" / "images.npy", faces[order])
    save_npy(root / "aligned" / "landmarks.npy", lms[order])
    sketches = np.full((8, R, R), 255, np.uint8)
    for k in range(8):  # a different stroke per face, so sketches can be told apart
        sketches[k, 60:62, 20 + 4 * k:100] = 0
        sketches[k, 20 + 8 * k:24 + 8 * k, 60:62] = 0
    save_npy(root / "sketches" / "sketches.npy", sketches)
    source_row = np.argsort(order)  # face i lives at aligned row source_row[i]
    for name, rows, photos in (("test", source_row[:4], PHOTOS), ("train", source_row[4:], TRAIN)):
        save_csv(root / "components" / name / "manifest.csv", pd.DataFrame({
            "row": range(4), "id": [i for _, i in photos], "identity": [i[:3] for _, i in photos],
            "label": [lab for lab, _ in photos], "source_row": rows,
        }))
    # data/shifted: the test faces under a warm and a cool cast (the `shifts` stage's format)
    from pipeline.data.shifts import CASTS, colour_cast

    shifted, rows = [], []
    for name in ("warm", "cool"):
        for i, (label, id_) in enumerate(PHOTOS):
            shifted.append(colour_cast(faces[i], CASTS[name], 1.0))
            rows.append({"id": id_, "identity": id_[:3], "split": "test", "shift": name, "source_row": int(source_row[i]),
                         "params": "{}", "row": len(rows)})
    save_npy(root / "shifted" / "images.npy", np.stack(shifted))
    save_npy(root / "shifted" / "clean.npy", np.concatenate([faces[:4]] * 2))
    save_npy(root / "shifted" / "landmarks.npy", np.concatenate([lms[:4]] * 2))
    save_csv(root / "shifted" / "manifest.csv", pd.DataFrame(rows))
    return root, faces[:4]


def _cfg(root, tmp_path, **kw) -> EvalConfig:
    return EvalConfig(
        profile=PROFILE, components=str(root / "components"), aligned=str(root / "aligned"),
        sketches=str(root / "sketches" / "sketches.npy"), shifted=str(root / "shifted"), metrics_path=str(tmp_path / "evaluate.json"),
        plots_dir=str(tmp_path / "plots"), swaps_per_face=2, grid_faces=3, batch_size=3, device="cpu", **kw)


class StandInEditor:
    """The `Editor` interface with no networks: geometry and appearance "latents" are the part
    crops themselves, and `output(geometry_face, appearance_face)` decides what a render is."""

    def __init__(self, output, sketch=None) -> None:
        from pipeline.core.profiles import part_boxes

        self.boxes = part_boxes(R)
        self.output, self.sketch = output, sketch

    def _crops(self, face):
        return {p: face[:, :, y:y + s, x:x + s] for p, (x, y, s) in self.boxes.items()}

    geometry_from_photo = appearance_codes = geometry_from_sketch = _crops

    def render(self, geometry, codes):
        return self.output(geometry["bg"], codes["bg"])

    def sketch_from_geometry(self, geometry):
        face = geometry["bg"]
        if self.sketch is None:
            return torch.ones_like(face)
        return self.sketch.to(face).expand(len(face), 3, R, R)


def test_swap_pairs_skip_same_identity():
    pairs = swap_pairs(["a", "b", "c", "a"], per_face=2)
    ids = np.array(["a", "b", "c", "a"])
    assert len(pairs) == 8
    assert np.all(ids[pairs[:, 0]] != ids[pairs[:, 1]])
    assert pairs[pairs[:, 0] == 0, 1].tolist() == [1, 2]  # face 3 is the same person: skipped
    with pytest.raises(ValueError, match="same identity"):
        swap_pairs(["a", "a"], 1)


def test_evaluate_writes_metrics_nulls_and_grids(models, split, tmp_path):
    root, faces = split
    torch.manual_seed(0)
    metrics = evaluate(_cfg(root, tmp_path, models_dir=str(models)))
    on_disk = json.loads((tmp_path / "evaluate.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))  # JSON holds exactly what was returned
    assert metrics["n_test"] == 4 and metrics["n_swaps"] == 8
    lm = metrics["landmarks"]
    # The real aligned photos are faces dlib finds at 128 px, close to their stored landmarks:
    # the floor sits well below both nulls, and two different people are further apart than
    # a person and the mean face.
    assert lm["missed_photo"] == 0 and lm["photo"] < 0.05
    assert lm["photo"] < lm["null_mean_face"] < lm["null_ignores_geometry"]
    assert set(lm["groups"]) >= {f"recon_{g}" for g in ("jaw", "brows", "nose", "eyes", "mouth")}
    # Test faces 0 and 3 are one person (001): dlib calls the two photos the same person.
    assert metrics["identity"]["other_photo_same_person"] == 1.0
    assert metrics["identity"]["null_mean_image_same_person"] < 0.5
    assert metrics["recon"]["null_mean_image_psnr"] < 20
    # The dataset's sketches differ face to face; the mean sketch matches none of them well.
    sk = metrics["sketch"]
    assert sk["tolerance_px"] == 2.0 and sk["null_mean_sketch_fscore"] < 1.0
    assert set(metrics["gates"]) == set(GATES)
    assert "fid" not in metrics and "lpips" not in metrics  # absent offline: no strings in metrics
    from pipeline.evaluation.evaluate import NULL_TABLE, null_table_markdown

    table = null_table_markdown(metrics)
    assert len(table.splitlines()) == 2 + len(NULL_TABLE)
    assert f"photo itself (floor) {lm['photo']:.3f}" in table
    # Runs side by side: one column each, the nulls once.
    from pipeline.evaluation.evaluate import compare_table_markdown

    a, b = json.loads(json.dumps(metrics)), json.loads(json.dumps(metrics))
    a["landmarks"]["recon"], b["landmarks"]["recon"] = 0.25, 0.5
    a["gates"]["recon_landmarks_vs_mean_face"], b["gates"]["recon_landmarks_vs_mean_face"] = True, False
    row = next(r for r in compare_table_markdown({"a": a, "b": b}).splitlines()
               if r.startswith("| reconstruction landmark error"))
    assert row.split(" | ")[1:4] == ["0.250 ✓", "0.500 ✗", f"photo itself (floor) {lm['photo']:.3f}; "
                                     f"training mean face {lm['null_mean_face']:.3f}"]
    assert any(r.startswith("| bar swap_beats_mean_face |") for r in compare_table_markdown({"a": a}).splitlines())

    import cv2

    for name in PLOT_FILES:
        img = cv2.imread(str(tmp_path / "plots" / name))
        assert img is not None and img.shape[0] >= (2 if name == "shifted.png" else 3) * 128, name  # shifted: a row per shift
    swaps = cv2.imread(str(tmp_path / "plots" / "swaps.png"))
    assert swaps.shape[1] >= 4 * 128  # geometry column + 3 appearance columns
    pairs = cv2.imread(str(tmp_path / "plots" / "swap_pairs.png"))
    assert pairs.shape[1] >= 3 * 128  # geometry source | swap | appearance source


def test_an_editor_that_copies_the_geometry_photo_scores_the_floor(split, tmp_path):
    """Known answers: returning the geometry source's photo gives infinite PSNR (stored as
    null), the photo's own landmark error for reconstructions and swaps, same person always,
    and fails the colour gate (the swap keeps the geometry source's colours)."""
    root, _ = split
    m = evaluate(_cfg(root, tmp_path), editor=StandInEditor(lambda geo, app: geo))
    lm = m["landmarks"]
    assert m["recon"]["psnr"] is None  # inf: JSON has no infinity
    assert m["recon"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert lm["recon"] == pytest.approx(lm["photo"], abs=1e-12)
    assert lm["swap_to_geometry"] == pytest.approx(lm["photo"], abs=1e-12)
    assert m["identity"]["recon_same_person"] == 1.0
    assert m["lab"]["swap_follows_appearance"] == 0.0
    assert not m["gates"]["swap_takes_appearance_colour"]
    assert m["gates"]["swap_follows_geometry"] and m["gates"]["recon_landmarks_vs_mean_face"]


def test_shifted_faces_a_model_that_renders_londons_colour_fails_the_colour_gates(split, tmp_path):
    """Out of the studio: an editor that keeps every shape but renders the training faces'
    colours (what a model that only learned London's light does) fails the shifted colour
    gates; copying the photo carries its colours exactly."""
    from pipeline.core.tensors import faces_to_tensor, tensor_to_faces
    from pipeline.editing.blend import match_colour
    from pipeline.evaluation.evaluate import training_nulls

    root, _ = split
    cfg = _cfg(root, tmp_path)
    mean_image = training_nulls(cfg, R).mean_image
    full = np.ones((R, R), np.float32)

    def london_colour(geo, app):
        faces = [match_colour(f, mean_image, full) for f in tensor_to_faces(geo)]
        return faces_to_tensor(np.stack(faces), geo.device)

    m = evaluate(cfg, editor=StandInEditor(london_colour))
    pooled = m["shifted"]["pooled"]
    assert m["shifted"]["n"] == 8 and set(m["shifted"]["per_shift"]) == {"warm", "cool"}
    assert pooled["recon_colour_error"] > pooled["clean_vs_shifted_colour"] * 0.5
    assert not m["gates"]["shifted_swap_takes_appearance_colour"]
    copy = evaluate(cfg, editor=StandInEditor(lambda geo, app: geo))
    assert copy["shifted"]["pooled"]["recon_colour_error"] == pytest.approx(0.0, abs=1e-6)
    assert copy["gates"]["shifted_colour_carried"] and copy["gates"]["shifted_swap_follows_geometry"]
    assert not copy["gates"]["shifted_swap_takes_appearance_colour"]  # a copy keeps the geometry photo's light


def test_edits_an_editor_that_ignores_the_sketch_fails_follows_and_the_mean_face_fails_keeps_the_person(split, tmp_path):
    """Edits, composed (the default) and pasted whole: a model that ignores the sketch (its
    render is always the appearance photo) does not follow the drawing when its render is
    pasted, and neither does the unedited photo (the null); composed, the user's strokes still
    move the photo's own pixels (editing.compose), which keep the person and the rest of the
    photo. A model that outputs the mean face keeps nobody when its render is pasted whole."""
    from pipeline.core.tensors import faces_to_tensor
    from pipeline.evaluation.evaluate import training_nulls

    root, _ = split
    cfg = _cfg(root, tmp_path)
    ignores = evaluate(cfg, editor=StandInEditor(lambda geo, app: app))
    local = ignores["edits"]["local"]
    assert local["full"]["pooled"]["feature_over_own"] > 1.0  # the drawn feature was not followed
    assert local["nulls"]["pooled"]["photo_over_own"] > 1.0  # nor by the unedited photo: the bar is not vacuous
    assert local["compose"]["pooled"]["feature_over_own"] < local["full"]["pooled"]["feature_over_own"]
    assert local["compose"]["pooled"]["psnr_outside"] >= 35 and local["compose"]["pooled"]["same_person"] == 1.0
    assert ignores["gates"]["edit_keeps_person"] and ignores["gates"]["edit_keeps_rest"]

    mean = faces_to_tensor(training_nulls(cfg, R).mean_image[None], torch.device("cpu"))
    m = evaluate(cfg, editor=StandInEditor(lambda geo, app: mean.expand(len(geo), -1, -1, -1)))
    assert m["edits"]["local"]["full"]["pooled"]["same_person"] < 0.5
    assert m["edits"]["swap"]["full"]["same_person_geometry"] < 0.5
    from pipeline.evaluation.edits import edits_table_markdown

    table = edits_table_markdown(m)
    assert "| local edit: same person (dlib) |" in table and "unedited photo" in table


def test_the_val_split_is_evaluated_when_asked(split, tmp_path):
    """`split: val` reads components/val (where choices are made); test stays the default."""
    import shutil

    root, _ = split
    data = tmp_path / "data"
    shutil.copytree(root, data)
    train = pd.read_csv(data / "components" / "train" / "manifest.csv", dtype={"identity": str})
    save_csv(data / "components" / "val" / "manifest.csv", train.iloc[:3])
    copy = StandInEditor(lambda geo, app: geo)
    assert evaluate(_cfg(data, tmp_path, split="val"), editor=copy)["n_test"] == 3
    assert evaluate(_cfg(data, tmp_path), editor=copy)["n_test"] == 4
    with pytest.raises(ValueError, match="split"):
        evaluate(_cfg(data, tmp_path, split="train"), editor=copy)


def test_an_editor_that_outputs_the_mean_face_fails_the_gates(split, tmp_path):
    """The model that learned nothing: every output is the training split's mean photo (and
    every decoded sketch its mean sketch). It must fail the identity, swap and sketch gates."""
    from pipeline.core.tensors import faces_to_tensor
    from pipeline.evaluation.evaluate import training_nulls

    root, _ = split
    cfg = _cfg(root, tmp_path)
    nulls = training_nulls(cfg, R)
    mean = faces_to_tensor(nulls.mean_image[None], torch.device("cpu"))
    mean_sketch = torch.from_numpy(nulls.mean_sketch).float().div(127.5).sub(1)[None, None]
    m = evaluate(cfg, editor=StandInEditor(lambda geo, app: mean.expand(len(geo), -1, -1, -1), mean_sketch))
    g = m["gates"]
    assert not g["recon_same_person"]
    assert not g["recon_landmarks_vs_mean_face"]
    assert not (g["swap_follows_geometry"] and g["swap_beats_mean_face"] and g["swap_not_appearance_shape"])
    assert not g["swap_beats_mean_face"]
    assert not g["decoded_sketch_beats_mean_sketch"]
    assert not g["line_drawing_followed"]  # the mean face follows no drawing
    assert m["sketch"]["decoded_fscore"] == pytest.approx(m["sketch"]["null_mean_sketch_fscore"], abs=0.02)


def test_weights_without_a_sketch_decoder_are_evaluated_without_sketch_figures(split, tmp_path):
    """The authors' release has no D_sketch: evaluate runs, leaves the sketch figures out and
    fails their gate instead of crashing."""
    from pipeline.models.editor import MissingSketchDecoderError

    class NoDecoder(StandInEditor):
        def sketch_from_geometry(self, geometry):
            raise MissingSketchDecoderError("no sketch decoder for bg")

    root, _ = split
    m = evaluate(_cfg(root, tmp_path), editor=NoDecoder(lambda geo, app: geo))
    assert m["sketch"] == {} and not m["gates"]["decoded_sketch_beats_mean_sketch"]
    assert m["landmarks"]["recon"] == pytest.approx(m["landmarks"]["photo"], abs=1e-12)


def test_gates_fail_on_missing_figures():
    from pipeline.evaluation.metrics import gates

    passing = {"identity": {"recon_same_person": 0.7}, "lab": {"swap_follows_appearance": 0.95},
               "ratios": {"drawing_over_own": 0.5, "recon_over_mean_face": 0.5, "swap_over_ignores_geometry": 0.5, "swap_over_mean_face": 0.6,
                          "swap_appearance_over_geometry": 1.5, "sketch_over_mean_sketch": 2.0},
               "shifted": {"psnr_drop": 0.5, "pooled": {"recon_colour_over_shift": 0.8, "swap_follows_appearance": 0.95,
                                                        "swap_over_ignores_geometry": 0.6}},
               "edits": {"local": {"compose": {"pooled": {"feature_over_own": 0.5, "same_person": 1.0, "psnr_outside": 50.0}}},
                         "swap": {"compose": {"follows_appearance": 1.0, "same_person_geometry": 1.0}}}}
    assert all(gates(passing).values())
    broken = json.loads(json.dumps(passing))
    broken["identity"]["recon_same_person"] = None  # NaN in the JSON (no face found)
    del broken["ratios"]["sketch_over_mean_sketch"]
    del broken["shifted"]  # no shifted faces measured
    g = gates(broken)
    assert not g["recon_same_person"] and not g["decoded_sketch_beats_mean_sketch"]
    assert not any(v for k, v in g.items() if k.startswith("shifted_"))
    assert g["swap_follows_geometry"]


def test_swaps_differ_from_reconstructions(models, split):
    """A swap (geometry i, appearance j) is a different image from i's reconstruction."""
    from pipeline.evaluation.evaluate import _render_pairs
    from pipeline.core.tensors import faces_to_tensor
    from pipeline.models.editor import load_editor

    _, faces = split
    editor = load_editor(models, PROFILE)
    x = faces_to_tensor(faces, torch.device("cpu"))
    geo, app = editor.geometry_from_photo(x), editor.appearance_codes(x)
    recon = _render_pairs(editor, geo, app, np.array([[0, 0], [1, 1]]), 2, "r").astype(np.int16)
    swap = _render_pairs(editor, geo, app, np.array([[0, 1], [1, 0]]), 2, "s").astype(np.int16)
    assert np.abs(recon - swap).mean() > 0.5


def test_evaluate_missing_weights_names_the_stage(split, tmp_path):
    root, _ = split
    cfg = _cfg(root, tmp_path, models_dir=str(tmp_path / "nomodels"))
    with pytest.raises(FileNotFoundError, match="train_sketch_ae"):
        evaluate(cfg)
