// KV-cache memory estimator: pure TS, usable without the native addon (`gemma3 inspect`, admission
// planning before a model loads). The hybrid formula, per sequence of n tokens:
//   bytes = 2 · Hkv · d · elem · (L_global · n + L_local · min(n, W))
// against the global-only baseline 2 · Hkv · d · elem · L · n (every layer caching every token).
// Page rounding (global layers hold whole pages) and rollback ring slots are reported apart.
import {
  KV_DTYPE_BYTES,
  checkInt,
  kvBytesPerLayerToken,
  layerCounts,
  ringGeometry,
  type AttentionLayout,
  type KVDType,
} from "./layout.js";

export type { AttentionLayout, KVDType } from "./layout.js";

export interface KVEstimateOptions {
  /** Tokens per sequence (prompt + generated). */
  context: number;
  /** Sequences held at once (default 1). */
  batch?: number;
  /** Element type of K and V (default bf16). */
  kvDtype?: KVDType;
  /** Tokens per global page (default 16), for the page-rounding line. */
  pageSize?: number;
  /** Tokens trim() can take back exactly (default 1: rings of exactly W slots). */
  rollback?: number;
}

export interface KVEstimate {
  context: number;
  batch: number;
  kvDtype: KVDType;
  pageSize: number;
  numGlobal: number;
  numLocal: number;
  /** W = min(sliding_window, context): tokens each sliding layer keeps */
  window: number;
  /** 2 · Hkv · d · element bytes */
  bytesPerLayerToken: number;
  /** global layers: L_global · n tokens, all sequences */
  global: number;
  /** sliding layers: L_local · min(n, W) tokens, all sequences */
  local: number;
  /** global + local */
  hybrid: number;
  /** every layer caching every token (no rings) */
  globalOnly: number;
  /** extra bytes of global layers holding whole pages: L_global · (⌈n/P⌉·P − n) tokens */
  pageRounding: number;
  /** extra ring slots kept for rollback beyond W (0 at the default rollback of 1) */
  ringExtra: number;
  /** hybrid + pageRounding + ringExtra: what a cache sized for exactly this allocates */
  allocated: number;
}

/** KV bytes of `batch` sequences of `context` tokens under the hybrid layout and without it. */
export function estimateKV(layout: AttentionLayout, o: KVEstimateOptions): KVEstimate {
  const n = checkInt(o.context, "context", 1);
  const batch = checkInt(o.batch ?? 1, "batch", 1);
  const pageSize = checkInt(o.pageSize ?? 16, "pageSize", 1);
  const kvDtype = o.kvDtype ?? "bf16";
  if (!(kvDtype in KV_DTYPE_BYTES))
    throw new RangeError(`kvDtype: bf16, f32 or fp8, got ${kvDtype}`);
  const { global: lg, local: ll } = layerCounts(layout);
  const { window, slots } = ringGeometry(layout, n, o.rollback ?? 1);
  const per = kvBytesPerLayerToken(layout, kvDtype) * batch;
  const global = lg * n * per;
  const local = ll * window * per;
  const pageRounding = lg * (Math.ceil(n / pageSize) * pageSize - n) * per;
  const ringExtra = ll * (slots - window) * per;
  return {
    context: n,
    batch,
    kvDtype,
    pageSize,
    numGlobal: lg,
    numLocal: ll,
    window,
    bytesPerLayerToken: per / batch,
    global,
    local,
    hybrid: global + local,
    globalOnly: (lg + ll) * n * per,
    pageRounding,
    ringExtra,
    allocated: global + local + pageRounding + ringExtra,
  };
}

export interface CacheSizeOptions {
  maxSeqs: number;
  maxSeqLen: number;
  pageSize: number;
  numPages: number;
  rollback?: number;
  /** sliding-layer snapshot blocks of pageSize tokens (prefix reuse; default 0) */
  snapshotBlocks?: number;
  dtype: KVDType;
}

/**
 * Device bytes a HybridKVCache with these options allocates for K and V (rings + page pool +
 * snapshot blocks: L_local · snapshotBlocks · pageSize tokens).
 */
export function hybridCacheBytes(layout: AttentionLayout, o: CacheSizeOptions): number {
  const { global: lg, local: ll } = layerCounts(layout);
  const { slots } = ringGeometry(layout, o.maxSeqLen, o.rollback ?? 1);
  const per = kvBytesPerLayerToken(layout, o.dtype);
  const snap = ll * (o.snapshotBlocks ?? 0) * o.pageSize;
  return (ll * o.maxSeqs * slots + lg * o.numPages * o.pageSize + snap) * per;
}

/**
 * Snapshot-block bytes for prefix reuse. A boundary B = kP is reusable with snapshots of blocks
 * ⌊(B − W + 1)/P⌋ … k − 1: ⌈(W − 1)/P⌉ blocks (fewer when B < W − 1) of L_local · P · 2·Hkv·d·bytes
 * each, ≈ L_local · (W − 1) · 2·Hkv·d·bytes; each further boundary of the same prefix adds a block.
 */
export function snapshotBytes(
  layout: AttentionLayout,
  o: { pageSize?: number; dtype: KVDType; maxSeqLen?: number },
): { perBlock: number; perBoundary: number; blocksPerBoundary: number } {
  const P = checkInt(o.pageSize ?? 16, "pageSize", 1);
  const { local: ll } = layerCounts(layout);
  const W = Math.min(layout.slidingWindow, o.maxSeqLen ?? layout.slidingWindow);
  const perBlock = ll * P * kvBytesPerLayerToken(layout, o.dtype);
  const blocksPerBoundary = W <= 1 ? 0 : Math.ceil((W - 1) / P);
  return { perBlock, perBoundary: perBlock * blocksPerBoundary, blocksPerBoundary };
}

/** 1536 → "1.50 KiB"; binary units, two decimals. */
export function formatBytes(b: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = b;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${b} B` : `${v.toFixed(2)} ${units[i]}`;
}
