"""Attribute editing end to end on the London set: a smile vector learned with `dfe
attribute-vector` from the smiling and neutral photos of the TRAINING identities of a built
project (its data/split/split.csv), alpha chosen on the VAL identities, and `dfe attribute`
applied to the neutral photos of the TEST identities, each scored against that person's real
smiling photo.

    python -m benchmarks.attribute --project . --out reports/attribute
    python -m benchmarks.attribute --project /tmp/exp2 --out /tmp/exp2/attr --device cpu

Per image (the unedited photo, the reconstruction = alpha 0, each alpha), on the full photo
frame after paste-back: the mouth-landmark error (dlib's 68 points, normalised by the smiling
photo's inter-ocular distance) against the real smiling photo, the edit measured in the input's
own aligned frame and the smiling photo in its own; and dlib's identity distance to the
unedited photo (< 0.6: the same person). Mouth errors average over the faces dlib finds in
every image set. Each paste-back (`--blends`: "change", the default of `dfe attribute`, and
"face", as `dfe edit` pastes) gets its own alpha, chosen on val by the dfi stage's rule. Timing: whole `dfe attribute` commands (process start, imports, model load,
detection, edit, paste, write) and the model-only seconds they print; classic DFI with random
VGG-19 weights when the ImageNet ones are absent (its time does not depend on their values).
Writes OUT/report.json, OUT/report.md, OUT/test/<id>.jpg and OUT/test/<id>_strip.png.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.evaluation.metrics import DLIB_SAME_PERSON_THRESHOLD


def _people(split: pd.DataFrame, which: str, london: Path) -> list[str]:
    ids = sorted(set(split.loc[split["split"] == which, "identity"]))
    return [i for i in ids if (london / "neutral" / f"{i}_03.jpg").exists() and (london / "smiling" / f"{i}_08.jpg").exists()]


def _link_folder(folder: Path, files: list[Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    for f in files:
        (folder / f.name).symlink_to(f.resolve())  # a relative --london would dangle from inside `folder`


def _dfe(args: list[str]) -> tuple[float, str]:
    """Run a dfe command; (wall seconds, its output)."""
    env = {**os.environ, "DFE_NO_PROGRESS": "1"}
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "stages.cli", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"dfe {' '.join(args)} failed ({p.returncode}): {p.stdout}{p.stderr}")
    return wall, p.stdout + p.stderr  # dfe prints on stderr (rich console)


class Scorer:
    """Mouth NME against a real target photo and dlib identity distance to the unedited photo."""

    def __init__(self, resolution: int) -> None:
        from pipeline.editing.edit import FaceDetector
        from pipeline.evaluation.metrics import DlibFaceEmbedder

        self.detector = FaceDetector(upsample=1, detect_side=512)
        self.embedder = DlibFaceEmbedder()
        self.r = resolution

    def aligned_landmarks(self, image: np.ndarray, transform: np.ndarray | None) -> np.ndarray:
        """(68,2) landmarks in the frame `transform` maps to (the image's own alignment if None); NaN: none."""
        from pipeline.data.align import alignment_transform, transform_points
        from pipeline.editing.edit import FaceNotFoundError

        try:
            lm = self.detector.landmarks(image, "image")
        except FaceNotFoundError:
            return np.full((68, 2), np.nan)
        m = alignment_transform(lm, self.r) if transform is None else transform
        return transform_points(lm, m).astype(np.float64)

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        import cv2

        small = []
        for img in images:
            k = 512 / min(img.shape[:2])
            small.append(cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) if k < 1 else img)
        return self.embedder.embed(small, boxes="detect")


def score_people(people: list[str], london: Path, vector, editor, scorer: Scorer, alphas: list[float],
                 feather: float, blend: str) -> tuple[dict[str, dict[str, np.ndarray]], list[dict]]:
    """Per image set name -> {'mouth': (P,), 'id': (P,)}; and per person the model seconds."""
    from pipeline.dfi.attribute import AttributeRequest, VectorUse, run_attribute
    from pipeline.editing.edit import read_image
    from pipeline.evaluation.metrics import LANDMARK_GROUPS, identity_distance, landmark_nme

    names = ["photo", "recon", *(f"a={a:g}" for a in alphas)]
    mouth = {n: [] for n in [*names, "smiling photo"]}
    ident = {n: [] for n in [*names, "smiling photo"]}
    rows = []
    for i, person in enumerate(people):
        neutral, smiling = london / "neutral" / f"{person}_03.jpg", london / "smiling" / f"{person}_08.jpg"
        req = AttributeRequest(str(neutral), [VectorUse(vector)], alpha=0.0, strip=tuple(alphas), feather=feather,
                               blend=blend)
        res = run_attribute(req, editor, scorer.detector)
        # The reconstruction as `dfe edit` pastes it (with blend "change", alpha 0 is the photo itself).
        recon = run_attribute(AttributeRequest(str(neutral), [VectorUse(vector)], alpha=0.0, feather=feather,
                                               blend="face"), editor, scorer.detector).image
        photo = read_image(neutral)
        images = {"photo": photo, "recon": recon, **{f"a={a:g}": im for a, im in zip(alphas, res.sweep)}}
        smile = read_image(smiling)
        ref = scorer.aligned_landmarks(smile, None)
        for name, img in images.items():
            lm = scorer.aligned_landmarks(img, res.transform)
            mouth[name].append(landmark_nme(lm[None], ref[None], LANDMARK_GROUPS["mouth"])[0]
                               if np.isfinite(lm).all() and np.isfinite(ref).all() else np.nan)
        mouth["smiling photo"].append(0.0 if np.isfinite(ref).all() else np.nan)  # ref: its own landmarks
        emb = scorer.embed([*images.values(), smile])
        dist = identity_distance(emb, np.repeat(emb[:1], len(emb), axis=0))
        for name, d in zip([*images, "smiling photo"], dist):
            ident[name].append(float(d))
        rows.append({"person": person, "model_s": res.seconds["model"]})
        print(f"  {i + 1}/{len(people)} {person}: mouth " + " ".join(
            f"{n}={mouth[n][-1]:.3f}" for n in names) + f"; id a={alphas[-1]:g} {ident[names[-1]][-1]:.3f}", flush=True)
    return {n: {"mouth": np.array(mouth[n]), "id": np.array(ident[n])} for n in mouth}, rows


def summarise(sets: dict[str, dict[str, np.ndarray]]) -> dict[str, dict]:
    names = [n for n in sets if n != "smiling photo"]
    common = np.logical_and.reduce([np.isfinite(sets[n]["mouth"]) for n in names])
    out = {}
    for n, v in sets.items():
        ids = v["id"][np.isfinite(v["id"])]
        out[n] = {"mouth_nme": float(v["mouth"][common].mean()) if common.any() and n != "smiling photo" else None,
                  "missed": int((~np.isfinite(v["mouth"])).sum()),
                  "id_distance": float(ids.mean()) if len(ids) else None,
                  "same_person": float((ids < DLIB_SAME_PERSON_THRESHOLD).mean()) if len(ids) else None}
    out["_n_common"] = int(common.sum())
    return out


def table(summary: dict, chosen: float | None) -> str:
    lines = ["| image | mouth NME vs real smile | dlib id distance to the photo "
             f"| same person (< {DLIB_SAME_PERSON_THRESHOLD}) | dlib missed |",
             "|---|---|---|---|---|"]
    for name, f in summary.items():
        if name.startswith("_"):
            continue
        label = name + (" (chosen on val)" if chosen is not None and name == f"a={chosen:g}" else "")
        nme = "—" if f["mouth_nme"] is None else f"{f['mouth_nme']:.4f}"
        idd = "—" if f["id_distance"] is None else f"{f['id_distance']:.3f}"
        same = "—" if f["same_person"] is None else f"{100 * f['same_person']:.0f} %"
        lines.append(f"| {label} | {nme} | {idd} | {same} | {f['missed']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, default=Path("."), help="a built project: data/split/split.csv")
    ap.add_argument("--models", type=Path, default=None, help="[PROJECT/models]")
    ap.add_argument("--london", type=Path, default=Path(os.environ.get("DFE_LONDON_DIR", "../shared/datasets/london-faces")))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--profile", default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--alphas", default="0.5,1,1.5,2,3")
    ap.add_argument("--min-same-person", type=float, default=0.8)
    ap.add_argument("--blends", default="change,face", help="paste-backs to measure (the first one is timed)")
    ap.add_argument("--max-test", type=int, default=0, help="first N test people (0: all)")
    ap.add_argument("--timing-photos", type=int, default=3)
    ap.add_argument("--classic-iters", type=int, default=50)
    ap.add_argument("--classic-photos", type=int, default=1)
    args = ap.parse_args()

    import torch

    from pipeline.dfi.dfi import pick_alpha
    from pipeline.dfi.vectors import check_fits, load_vector
    from pipeline.models.editor import load_editor

    models = args.models or args.project / "models"
    alphas = [float(a) for a in args.alphas.split(",")]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    split = pd.read_csv(args.project / "data" / "split" / "split.csv", dtype=str)
    train, val, test = (_people(split, s, args.london) for s in ("train", "val", "test"))
    test = test[: args.max_test] if args.max_test > 0 else test
    assert not (set(train) & set(test)) and not (set(train) & set(val)) and not (set(val) & set(test))
    print(f"identities with both photos: train {len(train)}, val {len(val)}, test {len(test)}", flush=True)
    _link_folder(out / "with", [args.london / "smiling" / f"{i}_08.jpg" for i in train])
    _link_folder(out / "without", [args.london / "neutral" / f"{i}_03.jpg" for i in train])
    common = ["--profile", args.profile, "--models", str(models), "--device", args.device]
    vec_path = out / "smile.safetensors"
    learn_s, learn_out = _dfe(["attribute-vector", "--with", str(out / "with"), "--without", str(out / "without"),
                               "-o", str(vec_path), "--parts", "mouth,nose,bg", "--spaces", "geometry,appearance",
                               "--no-normalise", *common])
    print(learn_out.strip(), f"\n  ({learn_s:.1f} s)", flush=True)

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    editor = load_editor(models, args.profile, args.device)
    vector = load_vector(vec_path)
    check_fits(vector, editor, models)
    scorer = Scorer(editor.profile.resolution)

    blends = args.blends.split(",")
    results = {}
    for blend in blends:  # alpha chosen on val for each, then the test figures
        print(f"blend {blend}, val (alpha choice):", flush=True)
        val_sets, _ = score_people(val, args.london, vector, editor, scorer, alphas, 0.06, blend)
        val_summary = summarise(val_sets)
        chosen, why = pick_alpha({a: val_summary[f"a={a:g}"] for a in alphas}, args.min_same_person)
        print(table(val_summary, chosen), f"\nchosen alpha {chosen} {why}", flush=True)
        print(f"blend {blend}, test:", flush=True)
        test_sets, rows = score_people(test, args.london, vector, editor, scorer, alphas, 0.06, blend)
        test_summary = summarise(test_sets)
        print(table(test_summary, chosen), flush=True)
        results[blend] = {"chosen_alpha": chosen, "choice_note": why, "val": val_summary, "test": test_summary,
                          "model_s_per_photo_recon_and_all_alphas": float(np.mean([r["model_s"] for r in rows]))}
    chosen = results[blends[0]]["chosen_alpha"]

    # Whole commands: fast on a few test photos (the first with the strip), classic on one.
    (out / "test").mkdir(exist_ok=True)
    timing = {"fast": [], "classic": []}
    a = chosen if chosen is not None else 1.0
    for k, person in enumerate(test[: args.timing_photos]):
        extra = ["--strip", ",".join(f"{x:g}" for x in [0, *alphas])] if k == 0 else []
        if k == 0:
            extra += ["--sketch-out", str(out / "test" / f"{person}_sketch.png")]
        wall, text = _dfe(["attribute", str(args.london / "neutral" / f"{person}_03.jpg"), "-v", str(vec_path),
                           "--alpha", f"{a:g}", "-o", str(out / "test" / f"{person}.jpg"), "--blend", blends[0],
                           *extra, *common])
        model = float(re.search(r"model ([0-9.]+)", text).group(1))
        timing["fast"].append({"person": person, "command_s": wall, "model_s": model, "strip": bool(extra)})
        print(text.strip(), f"(command {wall:.2f} s)", flush=True)
    from pipeline.models.vgg import VGG19Features, vgg_weights_path

    classic_note = "ImageNet VGG-19 weights"
    if not vgg_weights_path().exists():  # random weights: the time of classic DFI, not its result
        home = out / "torch_home_random_vgg"
        os.environ["TORCH_HOME"] = str(home)
        if not vgg_weights_path().exists():
            vgg_weights_path().parent.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(0)
            torch.save(VGG19Features().state_dict(), vgg_weights_path())
        classic_note = "RANDOM VGG-19 weights (timing only: the ImageNet weights are absent)"
    for person in test[: args.classic_photos]:
        wall, text = _dfe(["attribute", str(args.london / "neutral" / f"{person}_03.jpg"), "-v", str(vec_path),
                           "--alpha", "0.4", "--method", "classic", "--iters", str(args.classic_iters),
                           "-o", str(out / "test" / f"{person}_classic.jpg"), *common])
        model = float(re.search(r"model ([0-9.]+)", text).group(1))
        timing["classic"].append({"person": person, "command_s": wall, "model_s": model, "iters": args.classic_iters,
                                  "weights": classic_note})
        print(text.strip(), f"(command {wall:.2f} s; {classic_note})", flush=True)

    report = {"train": len(train), "val": len(val), "test": len(test), "alphas": alphas,
              "min_same_person": args.min_same_person, "blends": results, "learn_command_s": learn_s, "timing": timing, "vector": str(vec_path), "device": args.device,
              "torch_threads": torch.get_num_threads()}
    from pipeline.core.io import save_json

    save_json(out / "report.json", report)
    md = [f"train {len(train)} / val {len(val)} / test {len(test)} identities"]
    for blend, r in results.items():
        md += ["", f"blend {blend}: alpha chosen on val {r['chosen_alpha']} {r['choice_note']}", "", "val:", "",
               table(r["val"], r["chosen_alpha"]), "", "test:", "", table(r["test"], r["chosen_alpha"])]
    (out / "report.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}")


if __name__ == "__main__":
    main()
