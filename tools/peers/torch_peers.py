#!/usr/bin/env python3
"""Torch peers for native/bench/bench_kernels.cu: the same shapes, row names and timing rules.

Rows: bf16 GEMV (x[1, K] @ W[N, K].T, weights rotated beyond L2), bf16 GEMM, and causal SDPA at the
prefill shapes with the cuDNN and flash backends forced. Timing: warm-up, then each iteration
event-timed back to back; launches under 20 us are re-timed as CUDA-graph replays of a batch
(per-launch time = replay / batch). Reports median, p10, p90 in microseconds.

  python3 tools/peers/torch_peers.py --json torch.json --md torch.md
  python3 tools/peers/merge_bench.py bench.json torch.json

Needs torch with CUDA; no internet.
"""

import argparse
import json
import math
import subprocess
import sys

GRAPH_BELOW_US = 20.0  # as bench_kernels.cu
GRAPH_TARGET_US = 200.0
ROTATE_MIN_BYTES = 1 << 20

GEMV_KN = [(2560, 10240), (5376, 21504), (1152, 6912), (2560, 262208)]
GEMM_KN = [(2560, 10240), (5376, 21504)]
GEMM_M = [16, 128, 2048]
# (qo heads, kv heads, head_dim, seq): 4B at 8k (headline) and 2k, 27B at 4k.
PREFILL = [(8, 4, 256, 8192), (8, 4, 256, 1024), (8, 4, 256, 2048), (8, 4, 256, 4096), (8, 4, 256, 16384), (32, 16, 128, 4096)]
# (qo heads, kv heads, head_dim, queries, keys): the last 512-token chunk of a 2048-token prompt.
PREFILL_CHUNK = [(8, 4, 256, 512, 2048)]


def percentile(sorted_v, q):
    pos = q * (len(sorted_v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_v) - 1)
    return sorted_v[lo] + (pos - lo) * (sorted_v[hi] - sorted_v[lo])


def stats(v):
    s = sorted(v)
    return {
        "median_us": percentile(s, 0.5),
        "p10_us": percentile(s, 0.1),
        "p90_us": percentile(s, 0.9),
    }


class Bench:
    def __init__(self, torch, args):
        self.torch = torch
        self.args = args
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        self.l2_bytes = getattr(props, "L2_cache_size", 50 << 20) or (50 << 20)

    def rotation_copies(self, bytes_per_launch):
        """Copies whose total is at least 2x L2, so each launch reads DRAM (as the C++ bench)."""
        if bytes_per_launch < ROTATE_MIN_BYTES:
            return 1
        return int(min(max(math.ceil(2.0 * self.l2_bytes / bytes_per_launch), 1), 256))

    def _events(self, fn, iters, first):
        torch = self.torch
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
        ev[0].record()
        for i in range(iters):
            fn(first + i)
            ev[i + 1].record()
        torch.cuda.synchronize()
        return [ev[i].elapsed_time(ev[i + 1]) * 1e3 for i in range(iters)]

    def _graph(self, fn, batch, iters):
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # torch's recipe: warm up on a side stream before capture
            for j in range(min(batch, 3)):
                fn(j)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for j in range(batch):
                fn(j)
        g.replay()
        g.replay()
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
        ev[0].record()
        for i in range(iters):
            g.replay()
            ev[i + 1].record()
        torch.cuda.synchronize()
        return [ev[i].elapsed_time(ev[i + 1]) * 1e3 / batch for i in range(iters)]

    def time(self, fn, copies):
        """fn(i) launches iteration i (i picks the rotated buffer)."""
        a = self.args
        for i in range(a.warmup):
            fn(i)
        self.torch.cuda.synchronize()
        single = self._events(fn, a.iters, a.warmup)
        single_us = stats(single)["median_us"]
        if single_us >= GRAPH_BELOW_US:
            return dict(stats(single), single_us=single_us, mode="events")
        batch = max(math.ceil(GRAPH_TARGET_US / max(single_us, 0.5)), copies)
        batch = min(max(batch, 2), 1000)
        try:
            us = self._graph(fn, batch, a.iters)
            return dict(stats(us), single_us=single_us, mode=f"graph x{batch}")
        except Exception as e:  # capture refused: keep the event timing and say why
            self.torch.cuda.synchronize()
            return dict(stats(single), single_us=single_us, mode=f"events (graph refused: {e})")


def finish(row, timing, args):
    row.update(timing)
    sec = row["median_us"] * 1e-6
    if sec > 0:
        if row["unit"] == "TFLOP/s":
            row["achieved"] = row["flops"] / sec * 1e-12
        else:
            row["achieved"] = row["bytes"] / sec * 1e-9
        roof = max(row["flops"] / (args.peak_tflops * 1e12), row["bytes"] / (args.peak_gbs * 1e9))
        row["roofline_pct"] = 100.0 * roof / sec
    return row


def new_row(name, shape, dtype, impl):
    return {
        "name": name, "shape": shape, "dtype": dtype, "impl": impl,
        "median_us": 0.0, "p10_us": 0.0, "p90_us": 0.0, "single_us": 0.0, "mode": "",
        "copies": 1, "bytes": 0.0, "flops": 0.0, "achieved": 0.0, "unit": "",
        "roofline_pct": 0.0, "peer": "", "peer_us": 0.0, "ratio": 0.0, "peer_error": "",
        "error": "", "note": "",
    }


def mkn(m, k, n):
    return f"M{m} K{k} N{n}"


def run_matmul(b, torch, row, m, k, n):
    """y = x @ W.T in bf16 through F.linear (cuBLAS/cuBLASLt underneath)."""
    f = torch.nn.functional
    wb = n * k * 2.0
    row["flops"] = 2.0 * m * n * k
    row["bytes"] = wb if m == 1 else wb + m * k * 2.0 + m * n * 2.0
    row["unit"] = "GB/s" if m == 1 else "TFLOP/s"
    copies = b.rotation_copies(wb)
    row["copies"] = copies
    sd = 1.0 / math.sqrt(k)
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * sd for _ in range(copies)]
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    t = b.time(lambda i: f.linear(x, ws[i % copies]), copies)
    return finish(row, t, b.args)


def run_sdpa(b, torch, row, backend, h, kv, d, s):
    from torch.nn.attention import sdpa_kernel

    f = torch.nn.functional
    row["flops"] = 2.0 * 2.0 * s * s * d * h / 2.0  # QK^T and PV, causal half (as the C++ bench)
    row["bytes"] = s * (2 * h + 2 * kv) * d * 2.0
    row["unit"] = "TFLOP/s"
    q = torch.randn(1, h, s, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, kv, s, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, kv, s, d, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel(backend):
        try:  # native GQA first (torch >= 2.5); some backends refuse it
            f.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            torch.cuda.synchronize()
            fn = lambda i: f.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        except Exception as gqa_error:
            # Expanded K/V (made outside the timing) still reads h heads: say so in the row.
            ke = k.repeat_interleave(h // kv, dim=1)
            ve = v.repeat_interleave(h // kv, dim=1)
            f.scaled_dot_product_attention(q, ke, ve, is_causal=True)
            torch.cuda.synchronize()
            fn = lambda i: f.scaled_dot_product_attention(q, ke, ve, is_causal=True)
            row["note"] = f"kv expanded to {h} heads (enable_gqa refused: {first_line(gqa_error)})"
        t = b.time(fn, 1)
    return finish(row, t, b.args)


def run_sdpa_chunk(b, torch, row, backend, h, kv, d, q_len, s):
    """The last q_len queries of an s-token causal prompt (a chunked prefill's last chunk), as
    bench_kernels' "q{q_len} kv{s}" row: SDPA with a lower-right causal mask (torch >= 2.3)."""
    from torch.nn.attention import sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    f = torch.nn.functional
    pairs = q_len * (s - q_len) + q_len * (q_len + 1) / 2.0
    row["flops"] = 2.0 * 2.0 * pairs * d * h
    row["bytes"] = q_len * 2 * h * d * 2.0 + s * 2 * kv * d * 2.0
    row["unit"] = "TFLOP/s"
    q = torch.randn(1, h, q_len, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, h, s, d, device="cuda", dtype=torch.bfloat16)  # GQA expanded: see note
    v = torch.randn(1, h, s, d, device="cuda", dtype=torch.bfloat16)
    mask = causal_lower_right(q_len, s)
    row["note"] = f"kv expanded to {h} heads (a CausalBias mask with enable_gqa is not portable)"
    with sdpa_kernel(backend):
        f.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.cuda.synchronize()
        t = b.time(lambda i: f.scaled_dot_product_attention(q, k, v, attn_mask=mask), 1)
    return finish(row, t, b.args)


def first_line(e):
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:200]


def cases(torch):
    from torch.nn.attention import SDPBackend

    out = []
    def matmul(m, k, n):
        return lambda b, r: run_matmul(b, torch, r, m, k, n)

    def sdpa(be, h, kv, d, s):
        return lambda b, r: run_sdpa(b, torch, r, be, h, kv, d, s)

    out = []
    for k, n in GEMV_KN:
        out.append(("gemv", mkn(1, k, n), "bf16", "torch", matmul(1, k, n)))
    for k, n in GEMM_KN:
        for m in GEMM_M:
            out.append(("gemm", mkn(m, k, n), "bf16", "torch", matmul(m, k, n)))
    backends = [
        ("torch_sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
        ("torch_sdpa_flash", SDPBackend.FLASH_ATTENTION),
    ]
    for h, kv, d, s in PREFILL:
        shape = f"b1 h{h} kv{kv} d{d} s{s} causal"
        for impl, be in backends:
            out.append(("attention_prefill", shape, "bf16", impl, sdpa(be, h, kv, d, s)))
    for h, kv, d, q_len, s in PREFILL_CHUNK:
        shape = f"b1 h{h} kv{kv} d{d} q{q_len} kv{s} causal"
        for impl, be in backends:
            out.append(("attention_prefill", shape, "bf16", impl,
                        lambda b, r, be=be, h=h, kv=kv, d=d, q_len=q_len, s=s:
                        run_sdpa_chunk(b, torch, r, be, h, kv, d, q_len, s)))
    return out


def driver_version():
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else ""
    except Exception:
        return ""


def md_table(rows, args):
    out = [
        "| kernel | shape | dtype | impl | median µs | p10 µs | p90 µs | achieved | roofline % "
        "| timing |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        head = f"| {r['name']} | {r['shape']} | {r['dtype']} | {r['impl']} | "
        if r["error"]:
            out.append(head + "**error** | | | | | " + r["error"].replace("|", " ") + " |")
            continue
        ach = f"{r['achieved']:.1f}" if r["unit"] == "TFLOP/s" else f"{r['achieved']:.0f}"
        timing = r["mode"]
        if timing.startswith("graph"):
            timing += f" (1 launch {r['single_us']:.2f} µs)"
        if r["copies"] > 1:
            timing += f", {r['copies']} copies"
        if r["note"]:
            timing += "; " + r["note"]
        out.append(head + f"{r['median_us']:.2f} | {r['p10_us']:.2f} | {r['p90_us']:.2f} | "
                   f"{ach} {r['unit']} | {r['roofline_pct']:.1f} | {timing.replace('|', ' ')} |")
    out.append("")
    out.append(
        f"roofline = max(flops / {args.peak_tflops:.0f} TFLOP/s, "
        f"bytes / {args.peak_gbs:.0f} GB/s) / median"
    )
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--json", help="write all rows as JSON")
    ap.add_argument("--md", help="write a markdown table")
    ap.add_argument("--filter", default="", help="rows whose 'name shape dtype impl' has this")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--commit", default="")
    ap.add_argument("--peak-gbs", type=float, default=2990.0)
    ap.add_argument("--peak-tflops", type=float, default=800.0)
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    args = ap.parse_args()
    if args.iters < 1 or args.warmup < 0:
        ap.error("--iters must be >= 1 and --warmup >= 0")

    import torch

    picked = [c for c in cases(torch) if args.filter in f"{c[0]} {c[1]} {c[2]} {c[3]}"]
    if args.list:
        for c in picked:
            print(c[0], c[1], c[2], c[3])
        return 0
    if not torch.cuda.is_available():
        print("torch_peers: CUDA is not available to torch", file=sys.stderr)
        return 1

    dev = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(dev)
    device = {
        "name": props.name, "sms": props.multi_processor_count,
        "cc": f"{props.major}.{props.minor}", "l2_bytes": getattr(props, "L2_cache_size", 0),
        "driver": driver_version(), "runtime": torch.version.cuda or "",
        "torch": torch.__version__,
        "cudnn": str(torch.backends.cudnn.version() or ""),
    }
    print(
        f"device: {device['name']} ({device['sms']} SMs, cc {device['cc']}), "
        f"driver {device['driver']}, CUDA {device['runtime']}, torch {device['torch']}, "
        f"cuDNN {device['cudnn']}; commit {args.commit or '(not given)'}"
    )

    b = Bench(torch, args)
    rows = []
    for name, shape, dtype, impl, run in picked:
        row = new_row(name, shape, dtype, impl)
        try:
            run(b, row)
        except Exception as e:  # unsupported backend/shape: report it in the row and go on
            row["error"] = f"{type(e).__name__}: {first_line(e)}"
            try:
                torch.cuda.synchronize()
            except Exception:
                pass
        torch.cuda.empty_cache()
        if row["error"]:
            print(f"{name:18} {shape:38} {impl:18} ERROR {row['error']}", flush=True)
        else:
            print(f"{name:18} {shape:38} {impl:18} {row['median_us']:10.2f} us  "
                  f"{row['achieved']:9.1f} {row['unit']:7} {row['roofline_pct']:6.1f}%", flush=True)
        rows.append(row)

    table = md_table(rows, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tool": "torch_peers", "device": device, "commit": args.commit,
                       "iters": args.iters, "warmup": args.warmup, "peak_gbs": args.peak_gbs,
                       "peak_tflops": args.peak_tflops, "rows": rows}, f, indent=1)
    if args.md:
        with open(args.md, "w") as f:
            f.write(
                f"# torch peers\n\n{device['name']}, torch {device['torch']}, "
                f"CUDA {device['runtime']}, cuDNN {device['cudnn']}; "
                f"iters {args.iters}, warmup {args.warmup}\n\n{table}"
            )
    print()
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
