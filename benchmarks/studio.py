"""Latency of `dfe studio`'s live preview: per update, and from a stroke to the new picture in a browser.

    python -m benchmarks.studio                   # small profile (models/ if trained, else random) and paper
    python -m benchmarks.studio --no-browser --paper-iters 0

Rows:
- models per update, every part: what one stroke cost the networks before the part cache
  (E_sketch of every part, the part generators and the fusion net; the appearance codes were
  computed when chosen), on one CPU thread (how `dfe studio` runs the 128 px profiles) and on
  torch's default count;
- models per stroke, parts it crosses: the same with `studio.PartCache`, as `dfe studio` runs
  it (the strokes cross the mouth's box, and every stroke crosses bg's, the whole face); the
  ratio of the two is printed;
- server step per stroke: `Studio.render` whole (the models, the composition, the paste-back
  into the photo shrunk to 512 px);
- stroke -> new preview: `dfe studio` started on a free 127.0.0.1 port, Debian's Chromium
  headless (Playwright, no browser download) draws a short stroke on the sketch; from the pen
  lifting to the preview's new image, split into the page (pen up -> its first request), the
  transfer (uploads before the update's queue request: none since the page sends its strokes
  as JSON in that request), the server step and the way back (queue, the result, the preview
  image loading). Headless Chromium paints the canvas in software.
- paper: the models per update and per stroke at 512 px, random weights, one sketch encoder
  and one generator shared by the five parts (the FLOPs of five, a fifth of the memory);
  ~1.2 B parameters, in fp32 eager; per stroke through ONNX Runtime in fp32 (`dfe studio --runtime onnx`, one
  warm-up stroke first), and with fast convolutions (models.fastconv: what `dfe studio` runs
  on a CPU in fp32); on CPUs with native bf16 also per stroke with the fusion net in bf16
  (`dfe studio --dtype bf16-fusion`), alone and beside ONNX Runtime's part networks
  (`--runtime onnx --dtype bf16-fusion`), and with the part nets' residual blocks in bf16 as well
  (`dfe studio --dtype bf16-mixed`).

The browser helpers here (`start_studio`, `draw_stroke`, ...) also serve tests/test_studio.py.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pipeline import PARTS
from benchmarks.dtype import native_bf16, with_bf16_fusion
from pipeline.core.profiles import Profile, get_profile, part_boxes

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PHOTO_INPUT = "xpath=//button[@id='photo-upload']/preceding-sibling::input[@type='file'][1]"


# --------------------------------------------------------------------------- browser helpers


def chromium_path() -> str | None:
    """Debian's Chromium (apt-get install chromium), or None."""
    for path in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if path and Path(path).exists():
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def start_studio(models: str | Path, profile: str, log: Path, *extra: str, timeout: float = 90.0,
                 threads: int | None = None):
    """`dfe studio` on a free local port until the block ends (with `threads` torch threads
    when given); yields its URL. RuntimeError with the log's tail if it exits or does not
    answer in `timeout` s."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "stages.cli", "studio", "--models", str(models), "--profile", profile,
           "--port", str(port), "--host", "127.0.0.1", "--no-share", "--device", "cpu", *extra]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dfe studio exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dfe studio did not answer on {url} in {timeout:.0f} s: "
                                       f"{log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    """A headless Debian Chromium page (Playwright)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def preview(page) -> tuple[str, np.ndarray]:
    """The preview's image URL and pixels (RGB uint8, the PNG the server sent)."""
    from PIL import Image

    src = page.locator("#preview img").get_attribute("src")
    return src, np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))


def new_preview(page, old_src: str) -> tuple[str, np.ndarray]:
    """Wait for the preview to show another image than `old_src`; return it."""
    page.wait_for_function(
        "s => { const i = document.querySelector('#preview img'); return i && i.src && i.src !== s }", arg=old_src)
    return preview(page)


def open_photo(page, url: str, photo: str | Path) -> tuple[str, np.ndarray]:
    """Load the page, open `photo`, wait for its first preview."""
    page.goto(url)
    page.locator(PHOTO_INPUT).set_input_files(str(photo))
    page.wait_for_function("() => document.querySelector('#studio-status').innerText.includes('updated in')")
    out = new_preview(page, "")
    page.wait_for_selector("#sketch canvas[data-ready]")  # the photo's sketch is painted on the canvas
    return out


def draw_stroke(page, resolution: int, canvas_side: int, points: list[tuple[float, float]]) -> float:
    """Draw through `points` (aligned-face pixels) on the sketch canvas with the mouse; returns
    the time the pen lifted (time.perf_counter). The canvas (`canvas_side` px) shows the whole
    aligned sketch, scaled to its element."""
    box = page.locator("#sketch canvas").first.bounding_box()

    def screen(p: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + p[0] / resolution * box["width"], box["y"] + p[1] / resolution * box["height"]

    page.mouse.move(*screen(points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*screen(p))
    page.mouse.up()
    return time.perf_counter()


def line(a: tuple[float, float], b: tuple[float, float], n: int = 5) -> list[tuple[float, float]]:
    return [(a[0] + (b[0] - a[0]) * k / n, a[1] + (b[1] - a[1]) * k / n) for k in range(n + 1)]


# --------------------------------------------------------------------------- models


def random_modules(profile: Profile, share: bool) -> tuple[dict[str, dict[str, torch.nn.Module]], torch.nn.Module]:
    """Random part modules (shared by the five parts with `share`) and a fusion net, eval mode."""
    from pipeline.models import networks as N
    from pipeline.models.editor import init_appearance_encoder

    torch.manual_seed(0)

    def part() -> dict[str, torch.nn.Module]:
        gen = N.PartGenerator(profile)
        init_appearance_encoder(gen)
        return {"sketch_encoder": N.sketch_encoder(profile).eval(), "image_encoder": N.image_encoder(profile).eval(),
                "generator": gen.eval()}

    one = part() if share else None
    parts = {p: one if share else part() for p in PARTS}
    return parts, N.GlobalFusion(profile).eval()


def write_random_models(profile: Profile, folder: Path) -> Path:
    """models/<stage>/<part>.safetensors of random weights, as the stages lay them out."""
    from pipeline.models import networks as N
    from pipeline.models.weights import save_modules_safetensors

    parts, fusion = random_modules(profile, share=False)
    for p, mods in parts.items():
        save_modules_safetensors(folder / "sketch_ae" / f"{p}.safetensors",
                                 {"sketch_encoder": mods["sketch_encoder"], "sketch_decoder": N.SketchDecoder(profile)})
        save_modules_safetensors(folder / "image_encoder" / f"{p}.safetensors", {"image_encoder": mods["image_encoder"]})
        save_modules_safetensors(folder / "local" / f"{p}.safetensors", {"generator": mods["generator"]})
    save_modules_safetensors(folder / "fusion" / "fusion.safetensors", {"fusion": fusion})
    return folder


def make_studio(editor):
    from pipeline.data.sketches import SketchesConfig
    from pipeline.editing.edit import FaceDetector
    from pipeline.editing.studio import Studio
    from stages.common import config_from

    style = replace(config_from("sketches", SketchesConfig).style, randomize=0.0)
    return Studio(editor, FaceDetector(), style)


def strokes(resolution: int, n: int) -> list[list[tuple[float, float]]]:
    """n short strokes across the mouth box, each a little lower than the last."""
    x, y, s = part_boxes(resolution)["mouth"]
    return [line((x + 0.1 * s, y + s * (0.3 + 0.4 * k / max(1, n - 1))), (x + 0.9 * s, y + s * (0.3 + 0.4 * k / max(1, n - 1))))
            for k in range(n)]


def time_updates(studio, photo: str, n: int, warmup: int = 1, cached: bool = True) -> tuple[list[float], list[float]]:
    """Seconds per update over `n` strokes: (models, whole server step). cached=False runs
    every part's encoder and generator on every update (no studio.PartCache), as before the
    cache: the ratio of the two is what the cache saves."""
    import cv2

    from pipeline.editing.studio import PartCache, canvas_size, sketch_from_layers

    r = studio.resolution
    side = canvas_size(r)
    opened = studio.open(photo)
    studio.render(opened, paste_side=512)  # the photo's own sketch: the base the strokes blend into
    layer = np.zeros((side, side, 4), np.uint8)
    models, whole = [], []
    for k, pts in enumerate(strokes(r, warmup + n)):
        scaled = [(round(px * side / r), round(py * side / r)) for px, py in pts]
        cv2.line(layer, scaled[0], scaled[-1], (0, 0, 0, 255), max(1, side // 128))
        if not cached:
            opened.parts = PartCache()
        out = studio.render(opened, sketch_from_layers(opened.sketch, [layer]), paste_side=512)
        if k >= warmup:
            models.append(out.model_seconds)
            whole.append(out.seconds)
    return models, whole


def time_browser(models: Path, profile: str, photo: str, n: int, log: Path) -> dict[str, list[float]]:
    """Seconds over `n` strokes in Chromium, from the pen lifting: to the new preview image
    ("e2e"); to the page's first request ("page": the page's own work, such as exporting a
    canvas); from there to the update's queue request (files uploaded first: "upload"); the
    server's own step (from the
    page's status line: "server"); and the rest (queue, the result's way back, the preview
    image loading: "back")."""
    import re

    from pipeline.editing.studio import canvas_size

    r = get_profile(profile).resolution
    rows: dict[str, list[float]] = {k: [] for k in ("e2e", "page", "upload", "server", "back")}
    with start_studio(models, profile, log) as url, browser_page() as page:
        sent: list[tuple[float, str]] = []  # (perf_counter, url) of the page's requests to the server
        page.on("request", lambda req: sent.append((time.perf_counter(), req.url)) if req.method == "POST" else None)
        src, _ = open_photo(page, url, photo)
        for pts in strokes(r, n + 1):
            lifted = draw_stroke(page, r, canvas_size(r), pts)
            src, _ = new_preview(page, src)
            e2e = time.perf_counter() - lifted
            m = re.search(r"updated in (\d+) ms", page.locator("#studio-status").inner_text())
            server = int(m.group(1)) / 1000 if m else float("nan")
            after = [(t, u) for t, u in sent if t >= lifted]
            first = after[0][0] if after else float("nan")
            join = next((t for t, u in after if "queue/join" in u), float("nan"))
            for key, v in (("e2e", e2e), ("page", first - lifted), ("upload", join - first), ("server", server),
                           ("back", e2e - (join - lifted) - server)):
                rows[key].append(v)
    return {k: v[1:] for k, v in rows.items()}  # the first stroke warms the page up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models", help="small-profile weights; random if absent")
    ap.add_argument("--photo", default=None, help="a face photo (default: $DFE_LONDON_DIR/neutral/001_03.jpg)")
    ap.add_argument("--updates", type=int, default=10, help="strokes timed at the small profile")
    ap.add_argument("--strokes", type=int, default=5, help="strokes timed in the browser")
    ap.add_argument("--paper-iters", type=int, default=1, help="paper-profile updates timed (0: skip)")
    ap.add_argument("--browser", default=True, action=argparse.BooleanOptionalAction, help="the Chromium row")
    ap.add_argument("--onnx", default=True, action=argparse.BooleanOptionalAction,
                    help="the paper row through ONNX Runtime (--runtime onnx; needs onnx and onnxruntime)")
    args = ap.parse_args()
    photo = args.photo or str(Path(os.environ.get("DFE_LONDON_DIR", REPO.parent / "shared/datasets/london-faces"))
                              / "neutral" / "001_03.jpg")
    print(f"cpu, torch {torch.__version__}, {torch.get_num_threads()} threads; photo {photo}")
    rows: list[tuple[str, str, str, list[float]]] = []
    ratios: list[tuple[str, float]] = []  # models per stroke (cached parts) over models per update (every part)

    from pipeline.models.editor import Editor, load_editor

    small = get_profile("small")
    trained = (Path(args.models) / "fusion" / "fusion.safetensors").exists()
    tmp = Path(tempfile.mkdtemp(prefix="dfe-studio-bench-"))
    try:
        if trained:
            models_dir, weights = Path(args.models), f"trained ({args.models})"
        else:
            models_dir, weights = write_random_models(small, tmp / "models"), "random"
        studio = make_studio(load_editor(models_dir, small))
        default_threads = torch.get_num_threads()
        for n in sorted({1, default_threads}):  # dfe studio runs the 128 px profiles on one thread
            torch.set_num_threads(n)
            every, _ = time_updates(studio, photo, args.updates, cached=False)
            m, w = time_updates(studio, photo, args.updates)
            rows += [("small", weights, f"models per update, every part, {n} thread(s)", every),
                     ("small", weights, f"models per stroke, parts it crosses, {n} thread(s)", m),
                     ("small", weights, f"server step per stroke, {n} thread(s)", w)]
            ratios.append((f"small, {n} thread(s)", statistics.median(m) / statistics.median(every)))
        torch.set_num_threads(default_threads)
        if args.browser:
            if chromium_path() is None:
                print("no Chromium (apt-get install -y chromium): the browser row is left out")
            else:
                split = time_browser(models_dir, "small", photo, args.strokes, tmp / "studio.log")
                rows += [("small", weights, "stroke -> new preview in Chromium", split["e2e"]),
                         ("small", weights, "  page: pen up -> first request (export)", split["page"]),
                         ("small", weights, "  transfer: uploads before the update", split["upload"]),
                         ("small", weights, "  server step (1 thread)", split["server"]),
                         ("small", weights, "  back: queue, result, image load", split["back"])]
        if args.paper_iters > 0:
            paper = get_profile("paper")
            t0 = time.perf_counter()
            parts, fusion = random_modules(paper, share=True)
            editor = Editor(paper, part_boxes(paper.resolution), parts, fusion)
            print(f"paper modules built in {time.perf_counter() - t0:.1f} s")
            paper_studio = make_studio(editor)
            every, _ = time_updates(paper_studio, photo, args.paper_iters, warmup=0, cached=False)
            m, _ = time_updates(paper_studio, photo, args.paper_iters, warmup=0)
            threads = torch.get_num_threads()
            rows += [("paper", "random", f"models per update, every part, {threads} thread(s)", every),
                     ("paper", "random", f"models per stroke, parts it crosses, {threads} thread(s)", m)]
            ratios.append((f"paper, {threads} thread(s)", statistics.median(m) / statistics.median(every)))
            if args.onnx:  # what `dfe studio --runtime onnx` runs (fp32); before the cast below touches the fusion net
                import copy

                from pipeline.models.runtime import onnx_editor

                run_by_onnx = copy.copy(editor)
                run_by_onnx.parts = dict(editor.parts)  # onnx_editor replaces each part's modules in this dict
                t0 = time.perf_counter()
                onnx_editor(run_by_onnx, cache=False)
                print(f"ONNX Runtime sessions exported and built in {time.perf_counter() - t0:.0f} s")
                mo, _ = time_updates(make_studio(run_by_onnx), photo, args.paper_iters, warmup=1)
                rows.append(("paper", "random", f"models per stroke, ONNX Runtime fp32, {threads} thread(s)", mo))
                ratios.append((f"paper, ONNX Runtime over fp32, {threads} thread(s)", statistics.median(mo) / statistics.median(m)))
                if native_bf16(torch.device("cpu")) == "yes":  # `dfe studio --runtime onnx --dtype bf16-fusion`
                    mixed = with_bf16_fusion(run_by_onnx, editor.fusion)
                    mb, _ = time_updates(make_studio(mixed), photo, args.paper_iters, warmup=1)
                    rows.append(("paper", "random", f"models per stroke, ONNX Runtime + bf16 fusion, {threads} thread(s)", mb))
                    ratios.append((f"paper, ONNX Runtime + bf16 fusion over fp32, {threads} thread(s)",
                                   statistics.median(mb) / statistics.median(m)))
            editor.use_fast_convs()  # what `dfe studio` runs on a CPU in fp32 (load_editor); after the ONNX export
            mw, _ = time_updates(paper_studio, photo, args.paper_iters, warmup=0)
            rows.append(("paper", "random", f"models per stroke, fp32 with fast convolutions, {threads} thread(s)", mw))
            ratios.append((f"paper, fast convs over fp32, {threads} thread(s)", statistics.median(mw) / statistics.median(m)))
            if native_bf16(torch.device("cpu")) == "yes":  # what `dfe studio --dtype bf16-fusion` runs
                editor.cast_fusion(torch.bfloat16)
                m16, _ = time_updates(paper_studio, photo, args.paper_iters, warmup=0)
                rows.append(("paper", "random", f"models per stroke, fusion net in bf16, {threads} thread(s)", m16))
                ratios.append((f"paper, fusion net in bf16 over fp32, {threads} thread(s)",
                               statistics.median(m16) / statistics.median(m)))
                editor.cast_blocks(torch.bfloat16)  # `dfe studio --dtype bf16-mixed`: the parts' residual blocks too
                mm, _ = time_updates(paper_studio, photo, args.paper_iters, warmup=0)
                rows.append(("paper", "random", f"models per stroke, bf16-mixed, {threads} thread(s)", mm))
                ratios.append((f"paper, bf16-mixed over fp32, {threads} thread(s)", statistics.median(mm) / statistics.median(m)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    w = [max(len(r[i]) for r in [("profile", "weights", "what"), *rows]) + 2 for i in range(3)]  # columns fit their text
    print(f"\n{'profile':{w[0]}}{'weights':{w[1]}}{'what':{w[2]}}{'median ms':>10}{'min ms':>9}{'n':>4}")
    for prof, wts, what, times in rows:
        print(f"{prof:{w[0]}}{wts:{w[1]}}{what:{w[2]}}{1e3 * statistics.median(times):10.0f}{1e3 * min(times):9.0f}{len(times):4d}")
    for what, ratio in ratios:
        print(f"models per stroke / per update with every part ({what}): {ratio:.2f}" if "over fp32" not in what
              else f"models per stroke, {what}: {ratio:.2f}")


if __name__ == "__main__":
    main()
