// The cache's device-facing shapes: what a layer reads (LayerKV) and what a step carries
// (StepPlan: built once per step into one device buffer, read by every layer's attention).
import type { Tensor } from "@gemma3/native";
import type { StepRequest, StepSeq } from "./planner.js";

/**
 * K/V storage of one layer. k, v: [rows, num_kv_heads, head_dim] (rows of rings or of pages), in the
 * compute dtype or fp8_e4m3 (then element = e4m3 · kScale for k, e4m3 · vScale for v).
 */
export interface LayerKV {
  readonly sliding: boolean;
  /** sliding_window for sliding layers (prefill mask), 0 for global ones */
  readonly window: number;
  readonly rows: number;
  readonly k: Tensor;
  readonly v: Tensor;
  /** fp8_e4m3 storage: per-tensor dequantization scales of k and v (default 1) */
  readonly kScale?: number;
  readonly vScale?: number;
  /**
   * Sliding layers with snapshotBlocks > 0: snapshot storage k, v: [snapshotBlocks · pageSize,
   * num_kv_heads, head_dim]; every new token's K/V is also written here (GroupPlan.snapshotRows).
   */
  readonly snapshot?: { readonly k: Tensor; readonly v: Tensor } | null;
}

/** Decode tables: storage seen as [rows / pageSize, pageSize, Hkv, D] (NHD pages). */
export interface DecodeTables {
  readonly pageSize: number;
  /** [batch + 1] i32 */
  readonly kvIndptr: Tensor;
  /** [capacity] i32: fixed length for a batch size, so a captured graph replays the step */
  readonly kvIndices: Tensor;
  /** [batch] i32 */
  readonly kvLen: Tensor;
  readonly maxKvLen: number;
}

/** A prefill over cached tokens: each sequence's [context + chunk] rows, contiguous. */
export interface ContextPlan {
  readonly rows: number;
  /** [rows] i32: storage row per buffer row; −1 for the chunk's rows (filled from k/v) */
  readonly gatherRows: Tensor;
  /** [numTokens] i32: buffer row of each new token */
  readonly chunkRows: Tensor;
  /** [batch + 1] i32 */
  readonly kvIndptr: Tensor;
}

/** What the layers of one kind (sliding or global) read in a step. */
export interface GroupPlan {
  /** [numTokens] i32: storage row each new token's K/V goes to; −1 = not kept */
  readonly writeRows: Tensor;
  /** decode steps */
  readonly decode: DecodeTables | null;
  /** prefill steps where some sequence has cached tokens */
  readonly context: ContextPlan | null;
  /** [numTokens] i32: snapshot-storage row each new token's K/V is also written to; −1 = none */
  readonly snapshotRows?: Tensor | null;
  /**
   * Prefill steps with image-block spans (StepRequest.spans), else null: [numTokens] i32, the last
   * key index each new token may see beyond causality within its sequence's [context + chunk]
   * keys, −1 = none (attention_prefill's kv_last).
   */
  readonly kvLast?: Tensor | null;
}

/**
 * One step's plan, views of the cache's persistent plan buffer: valid until the next plan().
 * The tokens of the listed sequences are laid out one sequence after another.
 */
export interface StepPlan {
  readonly seqs: readonly StepSeq[];
  readonly numTokens: number;
  readonly maxQLen: number;
  /** Every sequence takes one token: scatter, then decode attention. */
  readonly decode: boolean;
  /** Rows of the largest [context + chunk] K (or V) buffer a layer gathers (0 = none). */
  readonly contextRows: number;
  /** [numTokens] i32 */
  readonly positions: Tensor;
  /** [batch + 1] i32 */
  readonly qoIndptr: Tensor;
  /** [batch] i32: row of each sequence's last new token */
  readonly lastRows: Tensor;
  readonly ring: GroupPlan;
  readonly global: GroupPlan;
  dispose(): void;
}

/** A KV cache as the model's layers use it. */
export interface KVCache {
  readonly numLayers: number;
  layer(i: number): LayerKV;
  /** Plans one step (appends `count` tokens to each sequence listed). */
  plan(steps: readonly StepRequest[]): StepPlan;
  /** Moves the planned sequences' lengths on, once the step's K/V are written. */
  commit(plan: StepPlan): void;
  dispose(): void;
}
