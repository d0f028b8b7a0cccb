#!/usr/bin/env python3
"""Random weights at a real Gemma 3 shape: saves them in the hub layout for our runtime, and times
HF transformers' greedy decode (bf16, batch 1) on the same GPU, as the peer for docs/benchmarks.md.

  python3 tools/reference/hf_decode_bench.py CONFIG.json OUT_DIR [--tokens 128] [--prompt 16]
      [--batches 1,8,32,64] [--ttft-prompt 2048] [--no-save]

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
ap.add_argument("--batches", default="1", help="comma-separated batch sizes for aggregate tok/s (greedy, static batch)")
ap.add_argument("--ttft-prompt", type=int, default=0, help="also time prefill + first token of a prompt this long")
ap.add_argument("--no-save", action="store_true", help="time only (our side uses random:CONFIG weights)")
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
for k, v in ({} if a.no_save else sd).items():
    if size > 4e9:
        shards.append(cur)
        cur, size = {}, 0
    cur[k] = v.detach().contiguous().cpu()
    size += v.numel() * v.element_size()
shards.append(cur)
weight_map = {}
for i, s in enumerate([] if a.no_save else shards):
    name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(s, os.path.join(a.out, name), metadata={"format": "pt"})
    weight_map.update({k: name for k in s})
if not a.no_save:
    json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(a.out, "model.safetensors.index.json"), "w"))

def timed(ids, **gen):
    """Median of 3 generate calls (after one warm-up of the same shape) in seconds, and the output."""
    with torch.no_grad():
        model.generate(ids, **{**gen, "max_new_tokens": min(8, gen["max_new_tokens"]), "min_new_tokens": min(8, gen["max_new_tokens"])})
        runs = []
        for _ in range(3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = model.generate(ids, **gen)
            torch.cuda.synchronize()
            runs.append(time.perf_counter() - t)
    runs.sort()
    return runs[1], out


gen = dict(max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False)
batches = {}
for b in [int(x) for x in a.batches.split(",") if x]:
    ids = torch.randint(3, 1000, (b, a.prompt), device="cuda")
    secs, out = timed(ids, **gen)
    new = out.shape[1] - ids.shape[1]
    batches[b] = {"tok_s": b * new / secs, "per_stream_tok_s": new / secs, "seconds_median": secs, "tokens": new}
ttft = None
if a.ttft_prompt:
    ids = torch.randint(3, 1000, (1, a.ttft_prompt), device="cuda")
    secs, _ = timed(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
    ttft = {"prompt": a.ttft_prompt, "ms": secs * 1000}
first = batches[min(batches)]
print(json.dumps({
    "hf_tok_s": first["per_stream_tok_s"],
    "tokens": first["tokens"],
    "prompt": a.prompt,
    "seconds_median": first["seconds_median"],
    "batches": batches,
    "ttft": ttft,
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "gpu": torch.cuda.get_device_name(),
    "params": sum(v.numel() for v in sd.values()),
}))
