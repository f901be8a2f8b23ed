"""Try training settings of the later stages on validation faces, without rerunning the earlier ones.

    python notebooks/sweep_val.py --name fusion-decay --set train_fusion.lr_decay=0.5
    python notebooks/sweep_val.py --name no-gan --set train_local.loss_weights.gan=0 \\
        --set train_local.loss_weights.fm=0 --set train_fusion.loss_weights.gan=0 --set train_fusion.loss_weights.fm=0

Trains `--stages` (default: local for every part, then fusion) with params.yaml plus the `--set`
overrides, on top of the earlier stages' weights in `--upstream` (default: models/), into
outputs/sweep/<name>/, then runs the evaluation on the **val** split (test stays for reporting)
and appends one line of figures (and each trained part's last validation loss) to
outputs/sweep/results.jsonl. `--no-evaluate` stops after training, e.g. to compare stage 1 alone:

    python notebooks/sweep_val.py --name bg-decay --stages sketch_ae --parts bg --no-evaluate \
        --set train_sketch_ae.steps=400 --set train_sketch_ae.lr_decay=0.5 This is `dvc exp run -S ...
-S evaluate.split=val` without retraining stages 1-2, for a quick look; the defaults are then
confirmed with `dvc repro` and reported on test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import yaml

from pipeline import PARTS

STAGES = ("sketch_ae", "image_encoder", "local", "fusion")


def _set(params: dict, assignment: str) -> None:
    key, _, value = assignment.partition("=")
    if not value:
        raise SystemExit(f"--set wants KEY=VALUE (a params.yaml path), got {assignment!r}")
    node = params
    *path, last = key.split(".")
    for k in path:
        node = node.setdefault(k, {})
    node[last] = yaml.safe_load(value)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--set", action="append", default=[], help="params.yaml override KEY=VALUE (repeatable)")
    ap.add_argument("--stages", default="local,fusion", help="stages to retrain, in order")
    ap.add_argument("--parts", default=",".join(PARTS), help="parts retrained in stages 1-3 (fusion uses all)")
    ap.add_argument("--no-evaluate", action="store_true", help="only train; report the final validation losses")
    ap.add_argument("--upstream", type=Path, default=Path("models"), help="weights of the stages not retrained")
    ap.add_argument("--out", type=Path, default=Path("outputs/sweep"))
    args = ap.parse_args(argv)

    from pipeline.core.config import load_params
    from pipeline.evaluation.evaluate import EvalConfig, evaluate
    from pipeline.training.train_fusion import train_fusion
    from pipeline.training.train_image_encoder import train_image_encoder
    from pipeline.training.train_local import train_local
    from pipeline.training.train_sketch_ae import train_sketch_ae
    from stages import train as train_cmds

    stages = [s for s in args.stages.split(",") if s]
    if unknown := set(stages) - set(STAGES):
        raise SystemExit(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    params = load_params()
    for assignment in args.set:
        _set(params, assignment)
    root = args.out / args.name
    shutil.rmtree(root, ignore_errors=True)
    models = root / "models"
    for stage in STAGES:
        if stage not in stages and (args.upstream / stage).is_dir():
            shutil.copytree(args.upstream / stage, models / stage)

    # The stage commands build their configs from the file DFE_PARAMS names: the overridden copy.
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    os.environ["DFE_PARAMS"] = str(root / "params.yaml")
    paths = {"models_dir": str(models), "checkpoints_dir": str(root / "checkpoints"), "live_root": str(root / "dvclive")}
    fns = {"sketch_ae": train_sketch_ae, "image_encoder": train_image_encoder, "local": train_local}
    seconds: dict[str, float] = {}
    for stage in stages:
        t = time.perf_counter()
        for part in ("fusion",) if stage == "fusion" else [p for p in args.parts.split(",") if p]:
            cfg = train_cmds._config(stage, part, dict(paths))
            train_fusion(cfg) if stage == "fusion" else fns[stage](part, cfg)
        seconds[stage] = round(time.perf_counter() - t)
    val_losses = {  # the last validation loss of every part trained (dvclive summaries)
        f"{d.parent.name}/{d.name}" if d.parent.name != "dvclive" else d.name: json.loads((d / "metrics.json").read_text()).get("val")
        for d in sorted((root / "dvclive").glob("**/")) if (d / "metrics.json").is_file()
    }
    if args.no_evaluate:
        row = {"name": args.name, "set": args.set, "seconds": seconds, "val_losses": val_losses}
        with open(args.out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row, indent=1))
        return
    ev = {k: v for k, v in (params.get("evaluate") or {}).items() if k in EvalConfig.__dataclass_fields__}
    m = evaluate(EvalConfig(**{**ev, "profile": params["profile"], "split": "val", "models_dir": str(models),
                               "metrics_path": str(root / "val.json"), "plots_dir": str(root / "plots")}))
    row = {
        "name": args.name, "set": args.set, "seconds": seconds, "val_losses": val_losses,
        "recon_same_person": m["identity"]["recon_same_person"],
        "recon_distance": m["identity"]["recon_distance"],
        "psnr": m["recon"]["psnr"], "ssim": m["recon"]["ssim"],
        "swap_follows_appearance": m["lab"]["swap_follows_appearance"],
        **{k: None if v is None else round(v, 3) for k, v in m["ratios"].items()},  # None: no face found
    }
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
