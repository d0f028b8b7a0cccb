// One Gemma 3 decoder layer, written as the math (HF Gemma3DecoderLayer):
//   r = o_proj(attn(input_layernorm(h)));   h += post_attention_layernorm(r)
//   x = pre_feedforward_layernorm(h);  r = down(gelu_tanh(gate(x)) · up(x));   h += post_feedforward_layernorm(r)
// Attention: q/k/v projections → q_norm/k_norm (RMSNorm over head_dim) → RoPE (local or global
// base and scale) → softmax(q·kᵀ · query_pre_attn_scalar^-½) · v, sliding window on local layers.
import { Tensor } from "@gemma3/native";
// layerOps = @gemma3/native ops whose matmul applies an fp8 weight's per-row scale (quantize.ts).
import { layerOps as ops } from "./quantize.js";
import type { Gemma3Config } from "./config.js";
import { cachedAttention, type KVCache, type StepPlan } from "@gemma3/kv-cache";
import { Scratch } from "./scratch.js";

/** Weights of one layer. Linear weights are [out, in] (torch layout); norms [hidden] or [head_dim]. */
export interface LayerWeights {
  inputLayernorm: Tensor;
  postAttentionLayernorm: Tensor;
  preFeedforwardLayernorm: Tensor;
  postFeedforwardLayernorm: Tensor;
  qProj: Tensor;
  kProj: Tensor;
  vProj: Tensor;
  oProj: Tensor;
  qNorm: Tensor;
  kNorm: Tensor;
  gateProj: Tensor;
  upProj: Tensor;
  downProj: Tensor;
}

export class DecoderLayer {
  /** The layer passes fp8 weights' scales to matmul (loaders may hand it ScaledWeight tensors). */
  static readonly supportsWeightScales = true;

  readonly sliding: boolean;
  private readonly rope: { base: number; scale: number };
  private readonly smScale: number;

  constructor(
    readonly index: number,
    private readonly cfg: Gemma3Config,
    readonly w: LayerWeights,
  ) {
    this.sliding = cfg.layerTypes[index] === "sliding";
    this.rope = this.sliding ? cfg.rope.local : cfg.rope.global;
    this.smScale = cfg.queryPreAttnScalar ** -0.5;
  }

  /**
   * Scratch bytes one call needs for n tokens (what `forward` allocates), with `contextRows` rows
   * of gathered K and V when the step prefills over cached tokens (StepPlan.contextRows).
   */
  static scratchBytes(
    cfg: Gemma3Config,
    n: number,
    dtype: "f32" | "bf16",
    contextRows = 0,
  ): number {
    const {
      hiddenSize: h,
      intermediateSize: f,
      numAttentionHeads: hq,
      numKeyValueHeads: hkv,
      headDim: d,
    } = cfg;
    const b = (cols: number) => Scratch.bytes([n, cols], dtype);
    const ctx = contextRows > 0 ? 2 * Scratch.bytes([contextRows, hkv * d], dtype) : 0;
    return 3 * b(h) + 2 * b(hq * d) + 2 * b(hkv * d) + 3 * b(f) + b(h) + ctx;
  }

  /**
   * Runs the layer on the step's new tokens: updates `h` in place and the layer's KV cache.
   * @param h [n, hidden] residual stream
   */
  forward(h: Tensor, cache: KVCache, plan: StepPlan, s: Scratch, workspace?: Tensor | null): void {
    const eps = this.cfg.rmsNormEps;
    const x = ops.rmsnorm(h, this.w.inputLayernorm, eps, s.alloc(h.shape, h.dtypeName));
    const r = this.attention(x, cache, plan, s, workspace ?? null);
    ops.rmsnormAdd(r, this.w.postAttentionLayernorm, h, eps);
    const x2 = ops.rmsnorm(h, this.w.preFeedforwardLayernorm, eps, s.alloc(h.shape, h.dtypeName));
    const r2 = this.mlp(x2, s);
    ops.rmsnormAdd(r2, this.w.postFeedforwardLayernorm, h, eps);
  }

  /**
   * The MLP branch: x [n, hidden] → down(gelu_tanh(gate(x)) · up(x)) [n, hidden]. Public for
   * tensor parallelism (tp/model.ts all-reduces the ranks' partial sums between the branches).
   */
  mlp(x: Tensor, s: Scratch): Tensor {
    const n = x.shape[0]!;
    const dt = x.dtypeName;
    const f = this.cfg.intermediateSize;
    const gate = ops.matmul(x, this.w.gateProj, { out: s.alloc([n, f], dt) });
    const up = ops.matmul(x, this.w.upProj, { out: s.alloc([n, f], dt) });
    const act = ops.geluMul(gate, up, s.alloc([n, f], dt));
    return ops.matmul(act, this.w.downProj, { out: s.alloc([n, this.cfg.hiddenSize], dt) });
  }

  /** The attention branch: x [n, hidden] → o_proj(attention(x)) [n, hidden] (public as mlp). */
  attention(
    x: Tensor,
    cache: KVCache,
    plan: StepPlan,
    s: Scratch,
    workspace: Tensor | null,
  ): Tensor {
    const { numAttentionHeads: hq, numKeyValueHeads: hkv, headDim: d, rmsNormEps: eps } = this.cfg;
    const n = x.shape[0]!;
    const dt = x.dtypeName;
    const q = ops.matmul(x, this.w.qProj, { out: s.alloc([n, hq * d], dt) }).view([n, hq, d]);
    const k = ops.matmul(x, this.w.kProj, { out: s.alloc([n, hkv * d], dt) }).view([n, hkv, d]);
    const v = ops.matmul(x, this.w.vProj, { out: s.alloc([n, hkv * d], dt) }).view([n, hkv, d]);
    ops.rmsnorm(q, this.w.qNorm, eps, q);
    ops.rmsnorm(k, this.w.kNorm, eps, k);
    ops.rope(q, plan.positions, this.rope.base, this.rope.scale);
    ops.rope(k, plan.positions, this.rope.base, this.rope.scale);

    // Through the cache: scatter + decode attention, or gather context + prefill + scatter
    // (@gemma3/kv-cache cachedAttention; the window applies on sliding layers).
    const o = cachedAttention(cache.layer(this.index), plan, q, k, v, {
      smScale: this.smScale,
      out: s.alloc([n, hq, d], dt),
      alloc: (shape, dtype) => s.alloc(shape, dtype),
      workspace,
    });
    return ops.matmul(o.view([n, hq * d]), this.w.oProj, {
      out: s.alloc([n, this.cfg.hiddenSize], dt),
    });
  }
}
