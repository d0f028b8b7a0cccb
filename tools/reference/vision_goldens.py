#!/usr/bin/env python3
"""Image preprocessing and multimodal prompt goldens for @gemma3/vision, from transformers + PIL.

  python3 tools/reference/vision_goldens.py TOKENIZER_DIR [--out FILE] [--notes FILE]

TOKENIZER_DIR holds tokenizer.json and tokenizer_config.json (with the chat template); the
build copies them to apps/cli/demo-model/. Reads the images of packages/vision/test/fixtures/
images (made by make_images.mjs) and preprocessor_config.json beside them (the published
Gemma 3 one), and writes vision_goldens.json beside them (or --out):

  images[name]:
    pil_mode, pil_size             the file as PIL opens it (before exif_transpose)
    decoded: width, height, sha256, samples (base64 uint8)
                                   transformers.image_utils.load_image(path) as HWC uint8 RGB
    slow[pas], pas in "off"/"on":  Gemma3ImageProcessor with the PIL backend (the slow one;
                                   Gemma3ImageProcessorPil in transformers >= 5), preprocessor_config
                                   values, do_pan_and_scan off/on with HF's default P&S values
      num_crops, shape, crops (x, y, width, height from the views pan_and_scan returns),
      per image (whole, then crops): mean per channel (float64), min, max, sha256 of the
      float32 bytes, samples (base64 float32 little-endian at the sample indices)
    fast[pas]: the torchvision-backend processor, same settings: per image its samples, and
      max |fast - slow| over the whole image
  chats[]: Gemma3Processor(slow image processor, tokenizer) input_ids for chats with these
    images, P&S off and on (HF's double <bos> kept as it comes; the test drops one), plus
    processor.apply_chat_template(tokenize=True) with the image paths where it runs
  sample rule: N values, K = 4096; N <= K: every index; else step = N // K and
    idx_k = k * step + (k * 7919 + 13) % step, k = 0..K-1 (the TS test recomputes it)
Every piece records what failed in errors[] instead of stopping.
"""
import argparse
import base64
import hashlib
import inspect
import json
import os
import sys
import traceback

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.join(here, "..", "..", "packages", "vision", "test", "fixtures")
ap = argparse.ArgumentParser()
ap.add_argument("tokenizer_dir")
ap.add_argument("--images", default=os.path.join(fixtures, "images"))
ap.add_argument("--config", default=os.path.join(fixtures, "preprocessor_config.json"))
ap.add_argument("--out", default=os.path.join(fixtures, "vision_goldens.json"))
ap.add_argument("--notes", default=None, help="write HF/PIL source excerpts here")
a = ap.parse_args()

K = 4096
out = {"_comment": "Written by tools/reference/vision_goldens.py; do not edit.", "errors": []}


def err(where):
    out["errors"].append({"where": where, "error": traceback.format_exc(limit=4)})
    print(f"error in {where}:\n{traceback.format_exc(limit=4)}", file=sys.stderr)


def sample_idx(n):
    if n <= K:
        return np.arange(n, dtype=np.int64)
    step = n // K
    k = np.arange(K, dtype=np.int64)
    return k * step + (k * 7919 + 13) % step


def b64(arr):
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")


import PIL
import transformers
from PIL import Image

out["versions"] = {
    "transformers": transformers.__version__,
    "pillow": PIL.__version__,
    "numpy": np.__version__,
}
try:
    import torch

    out["versions"]["torch"] = torch.__version__
except Exception:
    err("torch")

from transformers.image_utils import load_image

cfg = json.load(open(a.config))
S = cfg["size"]["height"]
PAS = dict(
    pan_and_scan_min_crop_size=256,
    pan_and_scan_max_num_crops=4,
    pan_and_scan_min_ratio_to_activate=1.2,
)

# The processor classes: the PIL ("slow") one and the torchvision ("fast") one, by backend.
procs = {}
for name in ["Gemma3ImageProcessorPil", "Gemma3ImageProcessor", "Gemma3ImageProcessorFast"]:
    try:
        cls = getattr(transformers, name, None)
        if cls is None:
            continue
        kw = {k: v for k, v in cfg.items() if v is not None and k not in ("image_processor_type", "processor_class", "image_seq_length")}
        p = cls(**kw)
        backend = getattr(type(p), "backend", None)
        backend = p.backend if isinstance(backend, property) else (
            "torchvision" if getattr(p, "is_fast", False) else "pil"
        )
        procs.setdefault(backend, (name, p))
    except Exception:
        err(f"construct {name}")
out["processors"] = {b: n for b, (n, _) in procs.items()}
slow = procs.get("pil", (None, None))[1]
fast = procs.get("torchvision", (None, None))[1]

notes = []


def note(title, obj):
    try:
        notes.append(f"===== {title}\n{inspect.getsource(obj)}")
    except Exception as e:
        notes.append(f"===== {title}: {e}")


note("load_image", load_image)
from transformers import image_transforms

note("image_transforms.convert_to_rgb", image_transforms.convert_to_rgb)
note("image_transforms.resize", image_transforms.resize)
note("image_transforms.rescale", image_transforms.rescale)
note("image_transforms.normalize", image_transforms.normalize)
for b, (n, p) in procs.items():
    note(f"{n} ({b})", type(p))
note("PIL.Image.Image.resize", Image.Image.resize)
note("PIL.Image.Image.convert", Image.Image.convert)
try:
    from transformers import Gemma3Processor

    note("Gemma3Processor", Gemma3Processor)
except Exception:
    err("import Gemma3Processor")


def crop_box(parent, view):
    """(x, y, w, h) of a CHW or HWC numpy view into parent, from the data pointers."""
    off = view.__array_interface__["data"][0] - parent.__array_interface__["data"][0]
    if view.shape[0] == 3 and parent.shape[0] == 3:  # CHW
        y, x = divmod(off // parent.itemsize, parent.shape[2])
        return [int(x), int(y), int(view.shape[2]), int(view.shape[1])]
    pix = off // parent.itemsize // parent.shape[2]
    y, x = divmod(pix, parent.shape[1])
    return [int(x), int(y), int(view.shape[1]), int(view.shape[0])]


def level_table(proc, is_torch):
    """[3, 256] float32: what the processor outputs for each uint8 level, from an S x S image of
    every level (no resize at S x S). None if the output is not a function of the level."""
    lv = (np.arange(S * S) % 256).reshape(S, S)
    ramp = np.repeat(lv[:, :, None], 3, axis=2).astype(np.uint8)
    r = proc(images=[Image.fromarray(ramp)], do_pan_and_scan=False, return_tensors="pt" if is_torch else "np")
    x = to_np(r["pixel_values"])[0]
    t = np.zeros((3, 256), np.float32)
    for c in range(3):
        for L in range(256):
            v = x[c][lv == L]
            if not np.all(v == v[0]):
                return None
            t[c, L] = v[0]
        if not np.all(np.diff(t[c]) > 0):
            return None
    return t


def encode_samples(vals, idx, table):
    """Sampled values as uint8 levels into `table` when every one is exactly a table entry
    (checked), else as float32."""
    vals = np.asarray(vals, dtype=np.float32)
    if table is not None:
        ch = idx // (S * S)
        lv = np.zeros(vals.size, np.int64)
        for c in range(3):
            m = ch == c
            lv[m] = np.clip(np.searchsorted(table[c], vals[m]), 0, 255)
        if np.array_equal(table[ch, lv], vals):
            return {"levels": b64(lv.astype(np.uint8))}
    return {"samples": b64(vals.astype("<f4"))}


def stats(x, table):
    x = np.asarray(x, dtype=np.float32)
    flat = x.reshape(-1)
    idx = sample_idx(flat.size)
    return {
        "shape": list(x.shape),
        "mean": [float(x[c].astype(np.float64).mean()) for c in range(x.shape[0])],
        "min": float(flat.min()),
        "max": float(flat.max()),
        "sha256": hashlib.sha256(np.ascontiguousarray(flat, dtype="<f4").tobytes()).hexdigest(),
        **encode_samples(flat[idx], idx, table),
    }


def to_np(pv):
    if hasattr(pv, "numpy"):
        pv = pv.numpy()
    if isinstance(pv, list):
        pv = np.stack([np.asarray(v) for v in pv])
    return np.asarray(pv, dtype=np.float32)


tables = {}
for b, (n, p) in procs.items():
    try:
        t = level_table(p, b == "torchvision")
        tables[b] = t
        out.setdefault("level_tables", {})[b] = None if t is None else b64(t.astype("<f4"))
    except Exception:
        err(f"level table {n}")
        tables[b] = None
if tables.get("pil") is not None and tables.get("torchvision") is not None:
    out["fast_vs_slow_level_table_max_abs"] = float(np.abs(tables["pil"] - tables["torchvision"]).max())

names = sorted(f for f in os.listdir(a.images) if not f.startswith("."))
out["images"] = {}
pils = {}
for name in names:
    path = os.path.join(a.images, name)
    rec = {}
    out["images"][name] = rec
    try:
        with Image.open(path) as im0:
            rec["pil_mode"] = im0.mode
            rec["pil_size"] = list(im0.size)
            rec["pil_format"] = im0.format
        im = load_image(path)
        pils[name] = im
        arr = np.asarray(im)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, arr.shape
        flat = arr.reshape(-1)
        rec["decoded"] = {
            "mode": im.mode,
            "width": int(arr.shape[1]),
            "height": int(arr.shape[0]),
            "sha256": hashlib.sha256(flat.tobytes()).hexdigest(),
            "samples": b64(flat[sample_idx(flat.size)]),
        }
    except Exception:
        err(f"{name}/decode")
        continue
    for pas in (False, True):
        key = "on" if pas else "off"
        sl = None
        if slow is not None:
            try:
                r = slow(images=[im], do_pan_and_scan=pas, return_tensors="np", **PAS)
                sl = to_np(r["pixel_values"])
                nc = r.get("num_crops")
                nc = [int(v) for v in np.asarray(nc).reshape(-1)] if nc is not None else None
                srec = {"num_crops": nc, "shape": list(sl.shape)}
                on0 = rec.get("slow", {}).get("off", {}).get("images", [None])[0]
                st = [stats(x, tables.get("pil")) for x in sl]
                if pas and on0 is not None and st[0]["sha256"] == on0["sha256"]:
                    # The whole image is the same with P&S on as off: keep it once (under "off").
                    st[0] = {"same_as_off": True, "sha256": st[0]["sha256"]}
                srec["images"] = st
                # The crop rectangles, from the views HF's pan_and_scan returns.
                if pas:
                    chw = np.ascontiguousarray(np.transpose(np.asarray(im), (2, 0, 1)))
                    try:
                        views = slow.pan_and_scan(chw, **PAS)
                    except TypeError:
                        views = slow.pan_and_scan(chw, PAS["pan_and_scan_min_crop_size"], PAS["pan_and_scan_max_num_crops"], PAS["pan_and_scan_min_ratio_to_activate"])
                    srec["crops"] = [crop_box(chw, v) for v in views]
                rec.setdefault("slow", {})[key] = srec
            except Exception:
                err(f"{name}/slow/{key}")
        if fast is not None:
            try:
                r = fast(images=[im], do_pan_and_scan=pas, return_tensors="pt", **PAS)
                fa = to_np(r["pixel_values"])
                frec = {"shape": list(fa.shape), "images": []}
                for i, x in enumerate(fa):
                    flat = x.reshape(-1)
                    idx = sample_idx(flat.size)
                    e = {"sha256": hashlib.sha256(np.ascontiguousarray(flat, dtype="<f4").tobytes()).hexdigest()}
                    if not (pas and i == 0):  # the whole image: sampled once, under "off"
                        e.update(encode_samples(flat[idx], idx, tables.get("torchvision")))
                    if sl is not None and sl.shape == fa.shape:
                        e["max_abs_vs_slow"] = float(np.abs(x - sl[i]).max())
                        e["mean_abs_vs_slow"] = float(np.abs(x - sl[i]).mean())
                    frec["images"].append(e)
                rec.setdefault("fast", {})[key] = frec
            except Exception:
                err(f"{name}/fast/{key}")

# ---- Token ids: Gemma3Processor on chats with these images. ----
CHATS = [
    {"name": f"one_image/{n}", "images": [n], "pas": [True] if i else [False, True], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}
    ]}
    for i, n in enumerate(names)
]
CHATS.append({
    "name": "multi_turn_three_images",
    "pas": [False, True],
    "images": ["wide_1600x300.png", "exif6_1200x700.jpg", "gray_500x1400.png"],
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": "You compare pictures."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "First:"}, {"type": "image"},
            {"type": "text", "text": "and second:"}, {"type": "image"},
            {"type": "text", "text": "Which is wider?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The first."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this one?"}]},
    ],
})
out["chats"] = []
try:
    from transformers import AutoTokenizer, Gemma3Processor

    tok = AutoTokenizer.from_pretrained(a.tokenizer_dir)
    proc = Gemma3Processor(
        image_processor=slow,
        tokenizer=tok,
        chat_template=tok.chat_template,
        image_seq_length=cfg.get("image_seq_length", 256),
    )
    for c in CHATS:
        msgs = c["messages"]
        for pas in c["pas"]:
            rec = {"name": c["name"], "images": c["images"], "messages": c["messages"], "pan_and_scan": pas}
            try:
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                imgs = [pils[n] for n in c["images"]]
                r = proc(text=[text], images=[imgs], do_pan_and_scan=pas, **PAS)
                rec["text"] = text
                rec["input_ids"] = [int(x) for x in np.asarray(r["input_ids"][0])]
                if "num_crops" in r:
                    rec["num_crops"] = [int(x) for x in np.asarray(r["num_crops"]).reshape(-1)]
            except Exception:
                err(f"chat {c['name']} pas={pas}")
            # The end-to-end path: the processor loads the images from their paths itself.
            try:
                pm = []
                it = iter(c["images"])
                for m in msgs:
                    pm.append({"role": m["role"], "content": [
                        {"type": "image", "path": os.path.join(a.images, next(it))} if p["type"] == "image" else p
                        for p in m["content"]]})
                r = proc.apply_chat_template(pm, add_generation_prompt=True, tokenize=True, return_dict=True, do_pan_and_scan=pas, **PAS)
                ids = [int(x) for x in np.asarray(r["input_ids"][0])]
                if ids == rec.get("input_ids"):
                    rec["apply_chat_template_same_ids"] = True
                else:
                    rec["apply_chat_template_ids"] = ids
            except Exception:
                err(f"chat {c['name']} pas={pas} apply_chat_template")
            out["chats"].append(rec)
except Exception:
    err("Gemma3Processor")

os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
with open(a.out, "w", encoding="utf-8") as f:
    # Compact (the sample strings and id lists are long); one section per line.
    f.write("{\n" + ",\n".join(f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in out.items()) + "\n}\n")
if a.notes:
    with open(a.notes, "w") as f:
        f.write("\n\n".join(notes))
summary = {
    "out": a.out,
    "versions": out["versions"],
    "processors": out["processors"],
    "images": len(out["images"]),
    "chats": len(out["chats"]),
    "errors": [e["where"] for e in out["errors"]],
}
for n, r in out["images"].items():
    s = r.get("slow", {})
    f = r.get("fast", {}).get("on", {}).get("images", [])
    summary[n] = {
        "mode": r.get("pil_mode"),
        "size": r.get("decoded", {}) and [r["decoded"]["width"], r["decoded"]["height"]],
        "crops": s.get("on", {}).get("num_crops"),
        "boxes": s.get("on", {}).get("crops"),
        "fast_max": max([e.get("max_abs_vs_slow", -1) for e in f], default=None),
    }
print(json.dumps(summary, indent=1))
