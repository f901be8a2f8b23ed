"""Renders that share their work. A render is the fusion net over every part's generator
features; the features come from the part's geometry latent (its sketch or photo crop
through the part's encoder) and its appearance code. Two renders of one face mostly share
these: a stroke changes the latents of the parts whose box it crosses, an appearance swap
changes codes only. `PartCache` keeps them part by part across `dfe studio`'s strokes;
`EditRenders` keeps them across the renders of one `dfe edit` (the edit, and for
composition R0 and R1). Both are exact: every render equals the one the whole forward pass
gives (tests/test_studio.py, tests/test_edit.py).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch



def _digest(*arrays: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.digest()


class PartCache:
    """What one photo's updates have in common, part by part, so a stroke re-runs only the
    parts whose box it crosses: each part's last sketch crop and its geometry latent, and
    the generator features of the last few (geometry, appearance code) pairs. A part whose
    crop did not change keeps its latent (the same tensor), so its features are found again
    for the same code; only the fusion net always runs. Exact: the render is the one the
    whole forward pass would give (tests/test_studio.py)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep  # feature maps kept per part (own and donor codes, before and after a slider)
        self.crops: dict[str, tuple[np.ndarray, torch.Tensor]] = {}
        self.features: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        self.runs: dict[str, int] = {}  # part -> encoder + generator runs (what a test can count)

    def geometry(self, editor, sketch: np.ndarray) -> dict[str, torch.Tensor]:
        """part -> geometry latent of the (R,R) uint8 sketch; unchanged crops are not re-encoded."""
        from pipeline.editing.edit import _sketch_tensor

        out, full = {}, None
        for part, (x, y, size) in editor.boxes.items():
            crop = sketch[y:y + size, x:x + size]
            hit = self.crops.get(part)
            if hit is not None and np.array_equal(hit[0], crop):
                out[part] = hit[1]
                continue
            if full is None:
                full = _sketch_tensor(sketch, editor.device)
            out[part] = editor.part_geometry_from_sketch(part, full[:, :, y:y + size, x:x + size])
            self.crops[part] = (crop.copy(), out[part])
            self.runs[part] = self.runs.get(part, 0) + 1
        return out

    def render(self, editor, geometry: dict[str, torch.Tensor], codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """editor.render(geometry, codes), with each part's features reused where its latent
        and code are the very tensors of an earlier update (through the editor's own render, so
        a wrapper such as the colour range still moves the render back)."""

        def features(part: str, g: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            seen = self.features.setdefault(part, [])
            found = next((f for g0, c0, f in seen if g0 is g and c0 is c), None)
            if found is None:
                found = editor.part_features(part, g, c)
                seen.insert(0, (g, c, found))  # holding g and c keeps their identities unique
                del seen[self.keep:]
                self.runs[part] = self.runs.get(part, 0) + 1
            return found

        return editor.render(geometry, codes, part_features=features)


class EditRenders:
    """The renders of one edit, sharing their work: the appearance codes of each set of donor
    faces, the geometry of each sketch or photo, the latents of part crops a sketch edit left
    as they were (`PartCache`), the part features of a (latent, code) pair seen before, and a
    whole render asked for twice (with the photo's own colours `dfe edit -s` asks for R1 as
    the edit and again as the composition's reference). Holds one photo's work: make one per
    edit."""

    def __init__(self, editor) -> None:
        self.editor = editor
        self.parts = PartCache(keep=8)
        self.codes: dict[bytes, dict[str, torch.Tensor]] = {}
        self.geometry: dict[bytes, dict[str, torch.Tensor]] = {}  # b"sketch"/b"photo" + the input's digest
        self.renders: dict[tuple[bytes, ...], np.ndarray] = {}
        self.forward_passes = 0  # renders that ran the fusion net (what a test can count)

    def render(self, appearance: np.ndarray, geometry_photo: np.ndarray | None, geometry_sketch: np.ndarray | None,
               part_appearance: dict[str, np.ndarray]) -> np.ndarray:
        """What `edit_aligned` returns for these inputs (it checks them)."""
        from pipeline.core.tensors import faces_to_tensor, tensor_to_faces

        editor, device = self.editor, self.editor.device
        faces = [appearance, *part_appearance.values()]
        codes_key = _digest(*faces) + "|".join(part_appearance).encode()
        if geometry_sketch is not None:
            geo_key = b"sketch" + _digest(geometry_sketch)
        else:
            geo_key = b"photo" + _digest(geometry_photo)
        key = (geo_key, codes_key)
        if key in self.renders:
            return self.renders[key].copy()

        if codes_key not in self.codes:
            all_codes = editor.appearance_codes(faces_to_tensor(np.stack(faces), device))  # one batch for every donor
            codes = {p: v[:1] for p, v in all_codes.items()}  # PARTS, and what a wrapper adds (colour_norm: the light)
            for k, part in enumerate(part_appearance, start=1):
                codes[part] = all_codes[part][k : k + 1]
            self.codes[codes_key] = codes
        if geo_key not in self.geometry:
            self.geometry[geo_key] = self.parts.geometry(editor, geometry_sketch) if geometry_sketch is not None \
                else editor.geometry_from_photo(faces_to_tensor(geometry_photo[None], device))
        geometry = self.geometry[geo_key]
        self.forward_passes += 1
        out = tensor_to_faces(self.parts.render(editor, geometry, self.codes[codes_key]))[0]
        self.renders[key] = out
        return out.copy()
