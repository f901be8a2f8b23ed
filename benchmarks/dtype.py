"""Faster inference paths against fp32 eager: the time of one face edit and how far each path's output is from fp32's.

    python -m benchmarks.dtype                     # paper profile at 512 px, on the CPU
    python -m benchmarks.dtype --device cuda --iters 5
    python -m benchmarks.dtype --profile small     # quick look
    python -m benchmarks.dtype --layers            # which convolutions bf16 costs precision in
    python -m benchmarks.dtype --convs [--isa avx2]   # each fast convolution alone against oneDNN
    python -m benchmarks.dtype --isa avx2 --path bf16-mixed   # fp32 and one path on the kernels of a CPU without AVX-512
    python -m benchmarks.dtype --trained models --profile small   # the dtypes on trained weights, London test faces

One edit as `dfe edit` runs it on an aligned face, model only (E_image geometry, appearance
codes of two donors, part generators, global fusion): the same random inputs go through the
editor in fp32 eager, in fp32 with channels_last weights, in fp32 with fast convolutions
(models.fastconv: Winograd and thin heads, what load_editor runs on a CPU), in fp32 with oneDNN's bf16 math for
convolutions and matmuls (bf16 inputs, fp32 accumulation; CPUs with native bf16 only), and
through a copy cast to bf16 (`Editor.cast`, what `--dtype bf16` does), the paths taking turns
so that a change in the machine's load hits all alike; and with only the fusion net in bf16
(`--dtype bf16-fusion`), or only the part generators (inputs cast in, outputs back to fp32), or
the fusion net and bg's generator, the two largest pieces (a path tried, not an option), or the
fusion net and the part nets' residual blocks (`--dtype bf16-mixed`, Editor.cast_blocks); and
in fp32 through ONNX Runtime (`--runtime onnx`, models.runtime), and on CPUs with native bf16
the part networks through ONNX Runtime with the fusion net in bf16 (`--runtime onnx --dtype
bf16-fusion`). (torch.compile was tried too: at the small profile it compiled for 79 s and then
ran no faster than eager.) The paper
editor has random weights with one image encoder and one generator shared by the five parts
(benchmarks.edit.random_editor: the same FLOPs at a fifth of the memory).
PSNR compares the uint8 outputs (what a user gets) of bf16 against fp32 on the same input.
Times are wall seconds and this process's CPU seconds (on a shared machine the CPU time is the
steadier of the two); the fastest edit of each dtype counts.

The second table is the model work of whole commands, in fp32: `dfe edit PHOTO -s EDITED`
composes, so beside the edit it renders R0 (the photo's own sketch) and R1 (the edited
sketch), both with the photo's own colours; `dfe edit PHOTO -a OTHER` renders the photo's own
reconstruction beside the edit. Each render alone (as before `editing.renders.EditRenders`)
against one EditRenders per command (what `dfe edit` runs: shared codes and geometry, part
features of the parts the stroke left alone, R1 and the edit one render when the colours are the
photo's own). The stroke crosses the mouth's box (and bg's, the whole face); outputs must match
bit for bit. Also the shared renders with fast convolutions (models.fastconv: what `dfe edit`
runs on a CPU), with the fusion net in bf16 (`--dtype bf16-fusion`, on
CPUs with native bf16) and through ONNX Runtime, with the lowest PSNR of their renders against
fp32's.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks.edit import random_editor
from pipeline.core.profiles import get_profile
from pipeline.editing.edit import edit_aligned
from pipeline.editing.renders import EditRenders


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class InBF16(torch.nn.Module):
    """A part generator run in bf16 inside an fp32 editor: inputs cast to bf16, outputs back to
    fp32 (a benchmark path only; the fusion net has its own, `Editor.cast_fusion`)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net.to(torch.bfloat16)

    @staticmethod
    def _f32(out):
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()

    def style(self, x):
        return self._f32(self.net.style(x.to(torch.bfloat16)))

    def feature(self, g, c):
        return self._f32(self.net.feature(g.to(torch.bfloat16), c.to(torch.bfloat16)))


def generators_in_bf16(editor):
    """A copy of `editor` with only the part generators in bf16."""
    ed = copy.deepcopy(editor)
    wrapped: dict[int, InBF16] = {}  # a generator shared by parts stays shared
    for part, modules in ed.parts.items():
        g = modules["generator"]
        ed.parts[part] = {**modules, "generator": wrapped.setdefault(id(g), InBF16(g))}
    return ed


def with_bf16_fusion(run_by_onnx, fusion: torch.nn.Module):
    """A shallow copy of an ONNX Runtime editor sharing its part sessions, with a bf16 copy of
    the PyTorch `fusion` net: what `--runtime onnx --dtype bf16-fusion` runs (onnx_editor keeps
    a bf16 fusion net in PyTorch), without exporting the part networks again."""
    mixed = copy.copy(run_by_onnx)
    mixed.fusion = copy.deepcopy(fusion)
    return mixed.cast_fusion(torch.bfloat16)


class ConvInBF16(torch.nn.Module):
    """One convolution in bf16, channels_last, inside an fp32 net: input cast in, output back."""

    def __init__(self, conv: torch.nn.Module) -> None:
        super().__init__()
        self.conv = copy.deepcopy(conv).to(torch.bfloat16).to(memory_format=torch.channels_last)

    def forward(self, x):
        return self.conv(x.to(torch.bfloat16, memory_format=torch.channels_last)).float().contiguous()


def editor_convs(editor) -> list[tuple[str, torch.nn.Module, str, torch.nn.Module]]:
    """(name, parent, attribute, conv) of every convolution of the editor's nets, each shared net once."""
    nets: dict[int, tuple[str, list[str], torch.nn.Module]] = {}
    for part, modules in editor.parts.items():
        for kind, net in modules.items():
            nets.setdefault(id(net), (kind, [], net))[1].append(part)
    out = []
    for kind, parts, net in [*nets.values(), ("fusion", list(editor.parts), editor.fusion)]:
        label = kind if len(parts) == len(editor.parts) else f"{kind}[{','.join(parts)}]"  # shared by every part: its kind
        for path, parent in net.named_modules():
            for attr, child in parent.named_children():
                if isinstance(child, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                    out.append((f"{label}.{path}.{attr}".replace("..", "."), parent, attr, child))
    return out


def layer_sensitivity(editor, faces) -> None:
    """Each convolution alone in bf16 (ConvInBF16, the rest fp32): the squared error it adds to the
    edit's uint8 output, and its time in fp32 and in bf16 (summed over the parts that share it);
    marked where `--dtype bf16-mixed` runs it in bf16 (a part net's residual block, or the fusion net)."""
    def conv_times(ed) -> dict[str, float]:
        spent: dict[str, float] = {}
        hooks = []
        for name, parent, attr, _ in editor_convs(ed):
            module = getattr(parent, attr)
            if isinstance(parent, ConvInBF16):  # time the cast in and out too
                module, name = parent, name.rsplit(".", 1)[0]
            start = {}
            hooks += [module.register_forward_pre_hook(lambda m, i, start=start: start.__setitem__(0, time.perf_counter())),
                      module.register_forward_hook(lambda m, i, o, name=name, start=start: spent.__setitem__(
                          name, spent.get(name, 0.0) + time.perf_counter() - start[0]))]
        timed_edit(ed, faces)  # warm-up
        spent.clear()
        timed_edit(ed, faces)
        for h in hooks:
            h.remove()
        return spent

    def in_bf16(keep) -> object:
        ed = copy.deepcopy(editor)
        for name, parent, attr, conv in editor_convs(ed):
            if keep(name):
                setattr(parent, attr, ConvInBF16(conv))
        return ed

    _, _, ref = timed_edit(editor, faces)
    t32, t16 = conv_times(editor), conv_times(in_bf16(lambda name: True))
    # what --dtype bf16-mixed puts in bf16, read off an editor it cast (same names, same order)
    cast = copy.deepcopy(editor).cast_fusion(torch.bfloat16).cast_blocks(torch.bfloat16)
    in_mixed = {name: conv.weight.dtype == torch.bfloat16 for name, *_, conv in editor_convs(cast)}
    del cast
    print(f"{'convolution alone in bf16':58} {'MSE':>7} {'fp32 ms':>8} {'bf16 ms':>8}  bf16-mixed")
    total = {True: [0.0, 0.0], False: [0.0, 0.0]}
    for name, *_ in editor_convs(editor):
        if name not in t32:
            continue  # not in this edit (the sketch encoder: geometry comes from a photo here)
        _, _, out = timed_edit(in_bf16(lambda n, name=name: n == name), faces)
        mse = float(np.mean((out.astype(np.float64) - ref.astype(np.float64)) ** 2))
        mixed = in_mixed[name]
        total[mixed][0] += mse
        total[mixed][1] += t32[name] - t16[name]
        print(f"{name:58} {mse:7.3f} {1e3 * t32[name]:8.1f} {1e3 * t16[name]:8.1f}  {'yes' if mixed else ''}")
    for mixed, (mse, saved) in total.items():
        print(f"{'in bf16-mixed' if mixed else 'kept in fp32'}: summed MSE {mse:.2f} (40 dB allows 6.50), "
              f"bf16 would save {saved:.2f} s")


def fast_conv_layers(editor, faces, iters: int) -> None:
    """Where one edit with fast convolutions spends its time, by module kind (forward hooks on
    every leaf module); then each convolution that models.fastconv computes another way, alone on
    the input it gets in an edit: the fastest of `iters` calls against oneDNN's (F.conv2d, what
    nn.Conv2d runs), and its largest error against float64 as a share of the output's largest
    value; one row per kind and shape, with how many of them an edit runs."""
    import torch.nn.functional as F

    from pipeline.models.fastconv import ThinConv2d, WinogradConv2d

    fast = copy.deepcopy(editor).use_fast_convs()
    leaves = {id(m): m for net in fast.networks() for m in net.modules() if not list(m.children())}.values()
    seen: dict[tuple, list] = {}  # (kind, input shape, weight shape) -> [calls, module, first input]
    spent: dict[str, float] = {}  # module kind -> seconds in the timed edit
    started: list[float] = []

    def before(module, inputs) -> None:
        if isinstance(module, (WinogradConv2d, ThinConv2d)):
            key = (type(module).__name__, tuple(inputs[0].shape), tuple(module.weight.shape))
            seen.setdefault(key, [0, module, inputs[0].clone()])[0] += 1
        started.append(time.perf_counter())

    def after(module, inputs, output) -> None:
        kind = type(module).__name__
        if isinstance(module, (WinogradConv2d, ThinConv2d)):
            kind += " (fast)" if module.fast(inputs[0]) else " (oneDNN: below its size)"
        spent[kind] = spent.get(kind, 0.0) + time.perf_counter() - started.pop()

    hooks = [h for m in leaves for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    timed_edit(fast, faces)  # warm-up
    seen.clear()
    spent.clear()
    wall = timed_edit(fast, faces)[0]
    for h in hooks:
        h.remove()
    print(f"one edit with fast convolutions: {wall:.2f} s; in its modules (forward hooks):")
    for kind, secs in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:40} {1e3 * secs:8.1f} ms")
    print()

    def best(f) -> float:
        f()
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return 1e3 * min(times)

    print(f"{'kind':15} {'input':>20} {'weight':>20} {'per edit':>8} {'oneDNN ms':>10} {'fast ms':>8} {'x':>5} {'error':>8}")
    with torch.inference_mode():
        for (kind, shape, wshape), (calls, conv, x) in seen.items():
            plain, quick = best(lambda: F.conv2d(x, conv.weight, conv.bias)), best(lambda: conv(x))
            exact = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double())
            err = float((conv(x).double() - exact).abs().max() / exact.abs().max())
            path = "" if conv.fast(x) else "  (below its size: oneDNN)"
            print(f"{kind:15} {str(shape):>20} {str(wshape):>20} {calls:8d} {plain:10.1f} {quick:8.1f} "
                  f"{quick / plain:5.2f} {err:8.1e}{path}")


def trained_paths(models_dir: str, profile: str, aligned_dir: str, split_csv: str, n: int) -> None:
    """The dtypes on trained weights: `n` test faces of the aligned set, each edited with the next
    one's colours (E_image geometry), every path's PSNR from fp32 (mean, lowest) and its time."""
    import pandas as pd

    from pipeline.core.config import MIXED, resolve_dtypes
    from pipeline.models.editor import load_editor

    faces = np.load(f"{aligned_dir}/images.npy", mmap_mode="r")
    rows = pd.read_csv(f"{aligned_dir}/manifest.csv").merge(pd.read_csv(split_csv, dtype=str)[["id", "split"]], on="id")
    test = rows[rows.split == "test"].row.tolist()[:n]
    if len(test) < 2:
        raise SystemExit(f"fewer than 2 test faces in {aligned_dir} (split {split_csv}): run `dvc repro split align`")
    paths = ("fp32", "bf16-fusion", MIXED, "bf16")  # --dtype names, resolved as the commands resolve them
    outs, secs = {}, {}
    for name in paths:
        dtype, fusion_dtype, block_dtype = resolve_dtypes(name, "cpu")
        editor = load_editor(models_dir, profile, dtype=dtype, fusion_dtype=fusion_dtype, block_dtype=block_dtype)
        edit_aligned(editor, faces[test[1]], geometry_photo=faces[test[0]])  # warm-up
        t = time.perf_counter()
        outs[name] = [edit_aligned(editor, faces[b], geometry_photo=faces[a]) for a, b in zip(test, test[1:] + test[:1])]
        secs[name] = time.perf_counter() - t
    print(f"{profile} profile, trained weights from {models_dir}, {len(test)} test faces of {aligned_dir}, "
          f"each edited with the next one's colours")
    print(f"{'path':14} {'x fp32':>7} {'PSNR mean':>10} {'lowest':>8}")
    for name in paths:
        psnr = [psnr_uint8(o, r) for o, r in zip(outs[name], outs["fp32"])]
        cells = ("-", "-") if name == "fp32" else (f"{np.mean(psnr):.1f} dB", f"{min(psnr):.1f} dB")
        print(f"{name:14} {secs[name] / secs['fp32']:7.2f} {cells[0]:>10} {cells[1]:>8}")


def timed_edit(editor, faces) -> tuple[float, float, np.ndarray]:
    """Wall and CPU seconds of one edit, and its output."""
    geo, app, mouth = faces
    if editor.device.type == "cuda":
        torch.cuda.synchronize(editor.device)
    t, c = time.perf_counter(), time.process_time()
    out = edit_aligned(editor, app, geometry_photo=geo, part_appearance={"mouth": mouth})
    return time.perf_counter() - t, time.process_time() - c, out  # a CPU array: already synced


def native_bf16(device: torch.device) -> str:
    from pipeline.core.config import native_bf16 as native

    return "yes" if native(device) else "no (emulated)"


def mouth_stroke(sketch: np.ndarray, boxes: dict[str, tuple[int, int, int]]) -> np.ndarray:
    """`sketch` with a line across the lower half of the mouth's box (below the nose's)."""
    import cv2

    x, y, size = boxes["mouth"]
    out = sketch.copy()
    row = y + (3 * size) // 4
    cv2.line(out, (x + size // 4, row), (x + (3 * size) // 4, row + size // 16), 0, max(1, size // 48))
    return out


def command_renders(editor, photo: np.ndarray, other: np.ndarray, s0: np.ndarray, s1: np.ndarray):
    """Per command: the renders it asks for, as (appearance, geometry_photo, geometry_sketch)."""
    return {
        "dfe edit -s (own colours)": [(photo, photo, s1), (photo, None, s0), (photo, None, s1)],
        "dfe edit -s -a OTHER": [(other, photo, s1), (photo, None, s0), (photo, None, s1)],
        "dfe edit -a OTHER": [(other, photo, None), (photo, photo, None)],
    }


def time_commands(editor, faces, iters: int, others: dict | None = None) -> None:
    """Each command's renders one by one against one EditRenders; prints the table. With
    `others` ({name: editor}: a copy with `cast_fusion(bf16)`, one run by ONNX Runtime) also the
    shared renders of each, and their lowest PSNR against fp32's renders alone."""
    others = others or {}
    rng = np.random.default_rng(1)
    r = editor.profile.resolution
    s0 = np.where(rng.random((r, r)) < 0.03, 0, 255).astype(np.uint8)  # sparse dark strokes on white
    s1 = mouth_stroke(s0, editor.boxes)
    extra = "".join(f" {name + ' s':>14} {'x alone':>8} {'PSNR':>8}" for name in others)
    print(f"{'command (fp32)':28} {'alone s':>8} {'shared s':>9} {'x alone':>8} {'renders':>8}  {'outputs':9}{extra}")
    for name, calls in command_renders(editor, faces[0], faces[1], s0, s1).items():
        alone, shared = [], []
        faster: dict[str, tuple[list[float], list]] = {k: ([], []) for k in others}
        for _ in range(iters):
            t = time.process_time()
            ref = [edit_aligned(editor, a, geometry_photo=g, geometry_sketch=sk) for a, g, sk in calls]
            alone.append(time.process_time() - t)
            t, renders = time.process_time(), EditRenders(editor)
            out = [edit_aligned(editor, a, geometry_photo=g, geometry_sketch=sk, renders=renders) for a, g, sk in calls]
            shared.append(time.process_time() - t)
            for k, ed in others.items():
                t, quick = time.process_time(), EditRenders(ed)
                low = [edit_aligned(ed, a, geometry_photo=g, geometry_sketch=sk, renders=quick) for a, g, sk in calls]
                faster[k] = (faster[k][0] + [time.process_time() - t], low)
        same = all(np.array_equal(a, b) for a, b in zip(ref, out))
        line = (f"{name:28} {min(alone):8.2f} {min(shared):9.2f} {min(shared) / min(alone):8.2f} "
                f"{renders.forward_passes:>4} of {len(calls)}  {'identical' if same else 'DIFFER':9}")
        for times, low in faster.values():
            psnr = min(psnr_uint8(a, b) for a, b in zip(low, ref))
            line += f" {min(times):14.2f} {min(times) / min(alone):8.2f} {psnr:5.1f} dB"
        print(line)
    print("(CPU seconds of this process, ONNX Runtime's threads included; the fastest of each)")


# oneDNN (and ATen) kernels held to what another CPU has; both are read when torch loads them
ISAS = {"native": {},
        "avx512_bf16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"},  # bf16 dot products, no AMX (e.g. AMD Zen 4)
        # no AVX-512: bf16 emulated; MKL too (its GEMMs: Winograd's products, models.fastconv)
        "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=2, help="edits per dtype; the fastest counts")
    ap.add_argument("--warmup", type=int, default=1, help="edits per path before the timed ones")
    ap.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                    help="also fp32 through ONNX Runtime (--runtime onnx; needs onnx and onnxruntime)")
    ap.add_argument("--commands", action=argparse.BooleanOptionalAction, default=True,
                    help="also time whole `dfe edit` commands: each render alone against shared work")
    ap.add_argument("--alone", action="store_true",
                    help="fp32 eager (the C library's allocator, and freed memory reused), fp32 with fast convolutions "
                         "(what dfe edit runs on a CPU), ONNX Runtime (and with the fusion net in bf16, on CPUs with "
                         "native bf16) each in a process of its own (as a user runs one): first and later edits")
    ap.add_argument("--convs", action="store_true",
                    help="instead: an edit's time by module kind, and each convolution models.fastconv "
                         "computes another way, alone against oneDNN")
    ap.add_argument("--layers", action="store_true",
                    help="instead: each convolution alone in bf16, the error it adds and the time it saves")
    ap.add_argument("--trained", metavar="MODELS",
                    help="instead: the dtypes on these trained weights (at --profile) and the test faces of --aligned")
    ap.add_argument("--aligned", default="data/aligned", help="with --trained: the align stage's output")
    ap.add_argument("--split", default="data/split/split.csv", help="with --trained: the split stage's table")
    ap.add_argument("--faces", type=int, default=12, help="with --trained: test faces edited")
    ap.add_argument("--path", action="append", default=[],
                    help="a path of the table to time, by its name (repeat it; fp32 always), e.g. --path bf16-mixed; default all")
    ap.add_argument("--isa", choices=tuple(ISAS), default="native",
                    help="hold oneDNN's kernels to another CPU's: avx512_bf16 (no AMX) or avx2 (rerun in a child process)")
    ap.add_argument("--only", choices=tuple(ALONE), help=argparse.SUPPRESS)  # one path, for --alone
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.isa != "native" and os.environ.get("DFE_BENCHMARK_ISA") != args.isa:
        env = {**os.environ, **ISAS[args.isa], "DFE_BENCHMARK_ISA": args.isa}
        sys.exit(subprocess.call([sys.executable, "-m", "benchmarks.dtype", *sys.argv[1:]], env=env))
    if args.alone:
        return alone(args)
    if args.trained:
        return trained_paths(args.trained, args.profile, args.aligned, args.split, args.faces)
    device, profile = torch.device(args.device), get_profile(args.profile)
    r = profile.resolution
    if args.only:
        return only(args, device, profile)
    kernels = f"native bf16: {native_bf16(device)}" if args.isa == "native" else \
        f"kernels held to {args.isa} ({' '.join(f'{k}={v}' for k, v in ISAS[args.isa].items())})"
    print(f"{profile.name} profile, {r} px, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{kernels}, random weights")

    t0 = time.perf_counter()
    editor = random_editor(profile, device)
    print(f"modules built in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (r, r, 3), dtype=np.uint8) for _ in range(3)]
    if args.layers:
        return layer_sensitivity(editor, faces)
    if args.convs:
        return fast_conv_layers(editor, faces, max(args.iters, 3))

    # (editor, oneDNN precision of fp32 convolutions and matmuls): "bf16" rounds their inputs to
    # bf16 and accumulates in fp32 on CPUs with native bf16, the activations stay fp32 in between
    channels_last = copy.deepcopy(editor)
    for module in {id(m): m for m in channels_last.networks()}.values():
        module.to(memory_format=torch.channels_last)
    paths = {"fp32": (editor, "none"), "fp32 channels_last": (channels_last, "none"),
             "fp32, fast convs": (copy.deepcopy(editor).use_fast_convs(), "none")}  # what load_editor runs on a CPU
    if device.type == "cpu" and native_bf16(device) == "yes":
        paths["fp32, oneDNN bf16 math"] = (editor, "bf16")
    paths["bf16 fusion net only"] = (copy.deepcopy(editor).cast_fusion(torch.bfloat16), "none")  # --dtype bf16-fusion
    paths["bf16 part generators only"] = (generators_in_bf16(editor), "none")
    # the two largest pieces of a render: the fusion net and bg's generator (the whole face)
    largest = copy.deepcopy(editor).cast_fusion(torch.bfloat16)
    largest.parts["bg"] = {**largest.parts["bg"], "generator": InBF16(copy.deepcopy(largest.parts["bg"]["generator"]))}
    paths["bf16 fusion + bg generator"] = (largest, "none")
    # --dtype bf16-mixed: the fusion net and every residual block of the part nets in bf16
    paths["bf16-mixed"] = (copy.deepcopy(editor).cast_fusion(torch.bfloat16).cast_blocks(torch.bfloat16), "none")
    paths["bf16"] = (copy.deepcopy(editor).cast(torch.bfloat16), "none")
    if device.type == "cpu" and args.onnx and (not args.path or any("ONNX" in q for q in args.path)):  # --runtime onnx
        from pipeline.models.runtime import onnx_editor

        t0 = time.perf_counter()
        run_by_onnx = copy.copy(editor)
        run_by_onnx.parts = dict(editor.parts)  # onnx_editor replaces each part's modules in this dict
        paths["fp32, ONNX Runtime"] = (onnx_editor(run_by_onnx, cache=False), "none")
        if native_bf16(device) == "yes":  # --runtime onnx --dtype bf16-fusion
            paths["ONNX Runtime, bf16 fusion"] = (with_bf16_fusion(run_by_onnx, editor.fusion), "none")
        print(f"ONNX Runtime sessions exported and built in {time.perf_counter() - t0:.0f} s")
    wanted = {"fp32", *args.path}
    if args.path:
        unknown = wanted - set(paths)
        if unknown:
            raise SystemExit(f"unknown --path {sorted(unknown)}; choose from {'; '.join(paths)}")
        paths = {k: v for k, v in paths.items() if k in wanted}
    rows: dict[str, tuple[list[float], list[float], np.ndarray]] = {k: ([], [], None) for k in paths}
    mkldnn = torch.backends.mkldnn
    for k in range(args.warmup + args.iters):  # the paths take turns, so a change in the machine's load hits all alike
        for name, (ed, math) in paths.items():
            mkldnn.conv.fp32_precision = mkldnn.matmul.fp32_precision = math
            try:
                wall, cpu, out = timed_edit(ed, faces)
            finally:
                mkldnn.conv.fp32_precision = mkldnn.matmul.fp32_precision = "none"
            if k >= args.warmup:  # first edits allocate (ONNX Runtime's arenas most of all)
                rows[name] = (rows[name][0] + [wall], rows[name][1] + [cpu], out)
    wall0, cpu0, ref = min(rows["fp32"][0]), min(rows["fp32"][1]), rows["fp32"][2]
    print(f"{'path':27} {'wall s':>8} {'x fp32':>7} {'CPU s':>8} {'x fp32':>7} {'PSNR vs fp32':>13}")
    for name, (wall, cpu, out) in rows.items():
        psnr = "-" if name == "fp32" else f"{psnr_uint8(out, ref):.1f} dB"
        print(f"{name:27} {min(wall):8.2f} {min(wall) / wall0:7.2f} {min(cpu):8.2f} {min(cpu) / cpu0:7.2f} {psnr:>13}")
    if "bf16" in rows:
        out = rows["bf16"][2]
        print(f"bf16 output: {100 * float(np.mean(out != ref)):.1f}% of values differ from fp32, "
              f"max {int(np.abs(out.astype(int) - ref).max())} levels; {args.iters} edits per path, the fastest shown")
    print("goal (issue: paper edits on a CPU): <= 0.5x fp32's time at >= 40 dB")
    if args.commands:
        print()
        others = {label: paths[name][0] for name, label in (("fp32, fast convs", "fast convs"),
                                                             ("bf16 fusion net only", "bf16-fusion"),
                                                             ("bf16-mixed", "bf16-mixed"),
                                                             ("fp32, ONNX Runtime", "onnx"),
                                                             ("ONNX Runtime, bf16 fusion", "onnx+bf16-fusion"))
                  if name in paths}
        time_commands(editor, faces, args.iters, others)


def only(args, device: torch.device, profile) -> None:
    """One path in this process: its edit times and last output into args.dump (.npz)."""
    r = profile.resolution
    if ALONE[args.only][1]:
        from pipeline.core.memory import reuse_freed_memory

        reuse_freed_memory()  # what every dfe command does
    editor = random_editor(profile, device)
    if args.only == "fast":
        editor.use_fast_convs()
    elif args.only.startswith("onnx"):
        from pipeline.models.runtime import onnx_editor

        onnx_editor(editor.cast_fusion(torch.bfloat16 if args.only == "onnx-bf16-fusion" else None), cache=False)
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (r, r, 3), dtype=np.uint8) for _ in range(3)]
    walls, cpus = [], []
    for _ in range(args.warmup + args.iters):
        wall, cpu, out = timed_edit(editor, faces)
        walls.append(wall), cpus.append(cpu)
    np.savez(args.dump, wall=walls, cpu=cpus, out=out)


# --alone paths: (label, whether freed memory is reused as in every dfe command)
ALONE = {"fp32": ("fp32 eager", False), "fp32-reuse": ("fp32 eager, freed memory reused", True),
         "fast": ("fp32, fast convs, reused (dfe edit)", True), "onnx": ("fp32, ONNX Runtime", False),
         "onnx-bf16-fusion": ("ONNX Runtime, bf16 fusion", False)}


def alone(args) -> None:
    """Paths each in a fresh process (--path picks them; default all): fp32 eager with the C
    library's allocator (as before pipeline.core.memory) and with freed memory reused, the
    fast convolutions (Winograd, thin heads) load_editor uses on a CPU, ONNX Runtime (and ONNX Runtime with
    the fusion net in bf16 where bf16 is native). The first edit (what a one-shot `dfe edit`
    pays) and the fastest of the later ones (the studio's strokes), each against fp32 eager's."""
    import subprocess
    import sys
    import tempfile

    if args.warmup + args.iters < 2:
        raise SystemExit("--alone needs at least 2 edits per path (--warmup + --iters): the first and a later one")
    print(f"{args.profile} profile, {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"each path in a process of its own, {args.warmup} + {args.iters} edits: the first, and the fastest after it")
    got = {}
    names = [n for n in ALONE if (n != "onnx-bf16-fusion" or native_bf16(torch.device(args.device)) == "yes")
             and (n == "fp32" or not args.path or n in args.path)]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            dump = f"{tmp}/{name}.npz"
            subprocess.run([sys.executable, "-m", "benchmarks.dtype", "--profile", args.profile, "--device", args.device,
                            "--iters", str(args.iters), "--warmup", str(args.warmup), "--only", name, "--dump", dump],
                           check=True)
            got[name] = dict(np.load(dump))
    first0, later0 = got["fp32"]["wall"][0], got["fp32"]["wall"][1:].min()
    print(f"{'path':36} {'first s':>8} {'x fp32':>7} {'later s':>8} {'x fp32':>7} {'PSNR vs fp32':>13}")
    for name in names:
        wall = got[name]["wall"]
        psnr = "-" if name == "fp32" else f"{psnr_uint8(got[name]['out'], got['fp32']['out']):.1f} dB"
        print(f"{ALONE[name][0]:36} {wall[0]:8.2f} {wall[0] / first0:7.2f} {wall[1:].min():8.2f} "
              f"{wall[1:].min() / later0:7.2f} {psnr:>13}")
    print("goal (issue: paper edits on a CPU): <= 0.5x fp32 eager's time at >= 40 dB")


if __name__ == "__main__":
    main()
