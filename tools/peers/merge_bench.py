#!/usr/bin/env python3
"""Merge bench_kernels JSON (ours) with torch_peers JSON into one markdown table.

  python3 tools/peers/merge_bench.py bench.json torch.json [--md merged.md]

Rows pair up by (name, shape): every torch row of a shape is set against every row of ours at that
shape (ours may be several weight formats against torch bf16). ratio = torch µs / ours µs, so > 1
means ours is faster. Our cuBLAS column comes from the C++ bench's own peer measurement.
"""

import argparse
import json
import sys


def load(path):
    with open(path) as f:
        data = json.load(f)
    if "rows" not in data:
        raise SystemExit(f"merge_bench: {path} has no 'rows' (not bench_kernels/torch_peers JSON)")
    return data


def us(v):
    return f"{v:.2f}" if v < 100 else f"{v:.1f}"


def achieved(r):
    if r.get("error") or not r.get("unit"):
        return ""
    fmt = "{:.1f}" if r["unit"] == "TFLOP/s" else "{:.0f}"
    return fmt.format(r.get("achieved", 0.0)) + " " + r["unit"]


def device_line(tag, d):
    dev = d.get("device", {})
    extra = ", ".join(
        f"{k} {dev[k]}" for k in ("driver", "runtime", "torch", "cudnn") if dev.get(k)
    )
    commit = d.get("commit") or "(no commit)"
    return f"- {tag}: {dev.get('name', '?')} ({extra}); commit {commit}"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("ours", help="JSON written by bench_kernels --json")
    ap.add_argument("peers", help="JSON written by torch_peers.py --json")
    ap.add_argument("--md", help="also write the table to this file")
    args = ap.parse_args()

    ours, peers = load(args.ours), load(args.peers)
    by_shape = {}
    for r in peers["rows"]:
        by_shape.setdefault((r["name"], r["shape"]), []).append(r)

    lines = ["# gemma3 kernels vs torch", ""]
    lines += [device_line("ours", ours), device_line("torch", peers)]
    on = ours.get("device", {}).get("name")
    pn = peers.get("device", {}).get("name")
    if on and pn and on != pn:
        lines.append(f"- **warning: different cards ({on} vs {pn}); ratios are not comparable**")
    lines += [
        "",
        "| kernel | shape | ours dtype | ours µs | ours achieved | cuBLAS µs | torch impl | "
        "torch µs | torch achieved | ratio |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    matched = set()
    for r in ours["rows"]:
        key = (r["name"], r["shape"])
        if key not in by_shape:
            continue
        matched.add(key)
        mine = "error" if r.get("error") else us(r["median_us"])
        cublas = us(r["peer_us"]) if r.get("peer") and not r.get("peer_error") else ""
        for p in by_shape[key]:
            if p.get("error"):
                theirs, ratio = "error: " + p["error"].replace("|", " ")[:80], ""
            else:
                theirs = us(p["median_us"])
                ok = not r.get("error") and r["median_us"] > 0
                ratio = f"{p['median_us'] / r['median_us']:.2f}" if ok else ""
            lines.append(
                f"| {r['name']} | {r['shape']} | {r['dtype']} | {mine} | {achieved(r)} | "
                f"{cublas} | {p['impl']} | {theirs} | {achieved(p)} | {ratio} |"
            )
    rest = [r for r in peers["rows"] if (r["name"], r["shape"]) not in matched]
    if rest:
        lines += ["", "Torch rows with no row of ours at that shape:", ""]
        for p in rest:
            t = "error" if p.get("error") else us(p["median_us"]) + " µs"
            lines.append(f"- {p['name']} {p['shape']} {p['dtype']} {p['impl']}: {t}")
    lines += ["", "ratio = torch µs / ours µs (> 1: ours is faster)"]
    text = "\n".join(lines) + "\n"
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
