#!/usr/bin/env python3
"""Random weights at a real Gemma 3 shape: saves them in the hub layout for our runtime, and times
HF transformers' greedy decode (bf16, batch 1) on the same GPU, as the peer for docs/benchmarks.md.

  python3 tools/reference/hf_decode_bench.py CONFIG.json OUT_DIR [--tokens 128] [--prompt 16]

Writes OUT_DIR/config.json (the text config, Gemma3ForCausalLM, sparse like the hub's) and
OUT_DIR/model-0000N-of-0000M.safetensors + model.safetensors.index.json (model.* keys, no lm_head).
Prints one JSON line: {"hf_tok_s": ..., "tokens": ..., ...}.
"""
import argparse
import json
import os
import time

import torch
import transformers
from safetensors.torch import save_file

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("out")
ap.add_argument("--tokens", type=int, default=128)
ap.add_argument("--prompt", type=int, default=16)
a = ap.parse_args()

src = json.load(open(a.config))
text = dict(src.get("text_config", src))
text.update({"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "torch_dtype": "bfloat16"})
for k in ("eos_token_id", "bos_token_id", "pad_token_id"):
    if k in src and k not in text:
        text[k] = src[k]
os.makedirs(a.out, exist_ok=True)
json.dump(text, open(os.path.join(a.out, "config.json"), "w"), indent=2)

torch.manual_seed(0)
config = transformers.AutoConfig.from_pretrained(a.out)
with torch.device("cuda"):
    model = transformers.Gemma3ForCausalLM._from_config(config, dtype=torch.bfloat16).eval()
with torch.no_grad():
    for n, p in model.named_parameters():  # no zeros anywhere (HF zero-inits the norms)
        if p.dim() == 1:
            p.uniform_(-0.5, 0.5)

# Save in shards of ~4 GB (hub layout: model.* keys, tied embedding, no lm_head).
sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
shards, cur, size = [], {}, 0
for k, v in sd.items():
    if size > 4e9:
        shards.append(cur)
        cur, size = {}, 0
    cur[k] = v.detach().contiguous().cpu()
    size += v.numel() * v.element_size()
shards.append(cur)
weight_map = {}
for i, s in enumerate(shards):
    name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(s, os.path.join(a.out, name), metadata={"format": "pt"})
    weight_map.update({k: name for k in s})
json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(a.out, "model.safetensors.index.json"), "w"))

ids = torch.randint(3, 1000, (1, a.prompt), device="cuda")
gen = dict(max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False)
with torch.no_grad():
    model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)  # warm-up
    runs = []
    for _ in range(3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(ids, **gen)
        torch.cuda.synchronize()
        runs.append(time.perf_counter() - t)
runs.sort()
new = out.shape[1] - ids.shape[1]
print(json.dumps({
    "hf_tok_s": new / runs[1],
    "tokens": new,
    "prompt": a.prompt,
    "seconds_median": runs[1],
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "gpu": torch.cuda.get_device_name(),
    "params": sum(v.numel() for v in sd.values()),
}))
