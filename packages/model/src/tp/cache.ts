// The KV cache of a tensor-parallel model: one HybridKVCache per rank, each on its rank's device
// holding only that rank's KV heads. The rank caches' planners get the same calls in the same order
// (they are deterministic bookkeeping over the same options), so every rank has the same sequences,
// pages and ring slots; rank 0's cache is this object itself, so the scheduler (admission, stats,
// sequences) sees a plain HybridKVCache.
import {
  HybridKVCache,
  type HybridKVCacheOptions,
  type StepPlan,
  type StepRequest,
} from "@gemma3/kv-cache";
import type { Device } from "@gemma3/native";
import type { Gemma3Config } from "../config.js";

export class TensorParallelKVCache extends HybridKVCache {
  /** Ranks 1 … N−1 (rank 0 is `this`). */
  private readonly others: HybridKVCache[];
  /** The plans of every rank of a step, by rank 0's plan. */
  private readonly stepPlans = new WeakMap<StepPlan, StepPlan[]>();

  /**
   * @param rankConfigs each rank's layout (its KV heads)
   * @param devices rank r's device
   */
  constructor(
    rankConfigs: readonly Gemma3Config[],
    devices: readonly Device[],
    o: Omit<HybridKVCacheOptions, "device">,
  ) {
    super(rankConfigs[0]!, { ...o, device: devices[0]! });
    const others: HybridKVCache[] = [];
    try {
      for (let r = 1; r < rankConfigs.length; r++)
        others.push(new HybridKVCache(rankConfigs[r]!, { ...o, device: devices[r]! }));
    } catch (e) {
      for (const c of others) c.dispose();
      super.dispose();
      throw e;
    }
    this.others = others;
  }

  /** Rank r's cache (0: this). */
  rank(r: number): HybridKVCache {
    const c = r === 0 ? this : this.others[r - 1];
    if (!c) throw new RangeError(`TensorParallelKVCache has no rank ${r}`);
    return c;
  }
  get size(): number {
    return this.others.length + 1;
  }

  /** K/V bytes over all ranks. */
  override get bytes(): number {
    return this.others.reduce((a, c) => a + c.bytes, super.bytes);
  }

  override add(maxTokens?: number, prompt?: readonly number[]): number {
    const id = super.add(maxTokens, prompt);
    for (const c of this.others) this.same(c.add(maxTokens, prompt), id);
    return id;
  }
  override fork(parent: number, maxTokens?: number): number {
    const id = super.fork(parent, maxTokens);
    for (const c of this.others) this.same(c.fork(parent, maxTokens), id);
    return id;
  }
  override trim(seq: number, length: number): void {
    super.trim(seq, length);
    for (const c of this.others) c.trim(seq, length);
  }
  override free(seq: number): void {
    super.free(seq);
    for (const c of this.others) c.free(seq);
  }
  override clearPrefixCache(): void {
    super.clearPrefixCache();
    for (const c of this.others) c.clearPrefixCache();
  }

  /** Plans the step on every rank; rank 0's plan is returned, `rankPlans` gives all of them. */
  override plan(steps: readonly StepRequest[]): StepPlan {
    const p0 = super.plan(steps);
    this.stepPlans.set(p0, [p0, ...this.others.map((c) => c.plan(steps))]);
    return p0;
  }
  /** Every rank's plan of the step `plan` (rank 0's) came from. */
  rankPlans(plan: StepPlan): StepPlan[] {
    const all = this.stepPlans.get(plan);
    if (!all) throw new RangeError("TensorParallelKVCache: a plan of another cache");
    return all;
  }
  override commit(plan: StepPlan): void {
    const all = this.rankPlans(plan);
    super.commit(plan);
    this.others.forEach((c, i) => c.commit(all[i + 1]!));
    this.stepPlans.delete(plan);
  }

  override dispose(): void {
    super.dispose();
    for (const c of this.others) c.dispose();
  }

  private same(got: number, want: number): void {
    if (got !== want)
      throw new Error(`TensorParallelKVCache: rank planners diverged (sequence ${got} vs ${want})`);
  }
}
