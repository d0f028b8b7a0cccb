#!/usr/bin/env python3
"""HF `tokenizers` (Rust) on the same corpus: load time and encode throughput (median of 5).
  python3 packages/tokenizer/bench/hf_encode.py MODEL_DIR CORPUS.txt"""
import json, sys, time
from tokenizers import Tokenizer

d, corpus = sys.argv[1], sys.argv[2]
text = open(corpus, encoding="utf-8", newline="").read()  # keep \r as is: the same text as Node reads
t = time.perf_counter(); tok = Tokenizer.from_file(f"{d}/tokenizer.json"); load = time.perf_counter() - t
tok.encode(text)
runs = []
for _ in range(5):
    t = time.perf_counter(); ids = tok.encode(text).ids; runs.append(time.perf_counter() - t)
runs.sort()
mb = len(text.encode()) / 2**20
print(json.dumps({"impl": "HF tokenizers (Rust, python)", "load_ms": load * 1e3, "encode_ms": runs[2] * 1e3, "mb_per_s": mb / runs[2], "tokens": len(ids)}))
