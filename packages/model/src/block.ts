// One Gemma 3 decoder layer, written as the math (HF Gemma3DecoderLayer):
//   r = o_proj(attn(input_layernorm(h)));   h += post_attention_layernorm(r)
//   x = pre_feedforward_layernorm(h);  r = down(gelu_tanh(gate(x)) · up(x));   h += post_feedforward_layernorm(r)
// Attention: q/k/v projections → q_norm/k_norm (RMSNorm over head_dim) → RoPE (local or global
// base and scale) → softmax(q·kᵀ · query_pre_attn_scalar^-½) · v, sliding window on local layers.
// Fused (the default): one [q; k; v] matmul and one [gate; up] matmul when the loader fused the
// weights (fuse.ts); q/k norm + RoPE as one kernel; each residual add with the norm that follows it
// (the next sublayer's, or the next layer's input norm) as one kernel. Same arithmetic either way.
import { Tensor, type ops as nativeOps } from "@gemma3/native";
// layerOps = @gemma3/native ops whose matmul applies an fp8 weight's per-row scale (quantize.ts).
import { layerOps as ops } from "./quantize.js";
import type { Gemma3Config } from "./config.js";
import { cachedAttention, directKvWrite, type KVCache, type StepPlan } from "@gemma3/kv-cache";
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
  /**
   * [q; k; v] rows in one weight [(Hq + 2·Hkv)·head_dim, hidden] when the loader fused them
   * (fuse.ts); qProj, kProj, vProj are then row views of it.
   */
  qkvProj?: Tensor;
  /** [gate; up] rows [2·intermediate, hidden] likewise (gateProj, upProj its row views). */
  gateUpProj?: Tensor;
}

/** The weights a checkpoint stores per layer (LayerWeights without the loader's fused ones). */
export type StoredLayerWeight = Exclude<keyof LayerWeights, "qkvProj" | "gateUpProj">;

/** The next layer's input norm, run by this layer's last kernel (text_model.ts). */
export interface NextNorm {
  /** [hidden] the next layer's input_layernorm weight */
  norm: Tensor;
  /** [n, hidden] where input_layernorm(h) goes */
  out: Tensor;
}

export class DecoderLayer {
  /** The layer passes fp8 weights' scales to matmul (loaders may hand it ScaledWeight tensors). */
  static readonly supportsWeightScales = true;

  readonly sliding: boolean;
  private readonly rope: { base: number; scale: number };
  private readonly smScale: number;

  /**
   * @param fusedOps one kernel for q/k norm + RoPE and for each residual add + next norm (default);
   *   false runs the separate ops, the unfused reference sequence (weights then loaded unfused)
   */
  constructor(
    readonly index: number,
    private readonly cfg: Gemma3Config,
    readonly w: LayerWeights,
    readonly fusedOps = true,
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
    // x, r, x2, down; q, o; k, v; the fused [q | k | v] rows; gate, up, act (or [gate | up], act).
    return 4 * b(h) + 2 * b(hq * d) + 2 * b(hkv * d) + b((hq + 2 * hkv) * d) + 3 * b(f) + ctx;
  }

  /**
   * Runs the layer on the step's new tokens: updates `h` in place and the layer's KV cache.
   * @param h [n, hidden] residual stream
   * @param x [n, hidden] input_layernorm(h) when the previous layer's last kernel computed it
   * @param next the next layer's input norm, for this layer's last kernel to compute as well
   */
  forward(
    h: Tensor,
    cache: KVCache,
    plan: StepPlan,
    s: Scratch,
    workspace?: Tensor | null,
    x?: Tensor | null,
    next?: NextNorm | null,
  ): void {
    const w = this.w;
    const eps = this.cfg.rmsNormEps;
    x ??= ops.rmsnorm(h, w.inputLayernorm, eps, s.alloc(h.shape, h.dtypeName));
    const r = this.attention(x, cache, plan, s, workspace ?? null);
    // h += post_attention_layernorm(r); x2 = pre_feedforward_layernorm(h)
    const x2 = this.addNorm(r, w.postAttentionLayernorm, h, {
      norm: w.preFeedforwardLayernorm,
      out: s.alloc(h.shape, h.dtypeName),
    });
    const r2 = this.mlp(x2, s);
    // h += post_feedforward_layernorm(r2) (and the next layer's input_layernorm(h))
    if (next) this.addNorm(r2, w.postFeedforwardLayernorm, h, next);
    else ops.rmsnormAdd(r2, w.postFeedforwardLayernorm, h, eps);
  }

  /** h += norm(r), then next.out = next.norm(h): one kernel when fused. Returns next.out. */
  private addNorm(r: Tensor, norm: Tensor, h: Tensor, next: NextNorm): Tensor {
    const eps = this.cfg.rmsNormEps;
    if (this.fusedOps) return ops.rmsnormAddRmsnorm(r, norm, h, next.norm, eps, next.out);
    ops.rmsnormAdd(r, norm, h, eps);
    return ops.rmsnorm(h, next.norm, eps, next.out);
  }

  /**
   * The MLP branch: x [n, hidden] → down(gelu_tanh(gate(x)) · up(x)) [n, hidden]. Public for
   * tensor parallelism (tp/model.ts all-reduces the ranks' partial sums between the branches).
   */
  mlp(x: Tensor, s: Scratch): Tensor {
    const n = x.shape[0]!;
    const dt = x.dtypeName;
    const f = this.cfg.intermediateSize;
    const w = this.w;
    let act: Tensor;
    if (w.gateUpProj) {
      // One [gate; up] projection whose rows geluMul reads as two halves, given to geluMul as its
      // projection: on CUDA at decode one GEMV writes gelu(gate)·up straight from its sums
      // (kernels.inc matmul_gelu_mul; the [n, 2f] scratch is then left unwritten).
      const gateUp = s.alloc([n, 2 * f], dt);
      act = ops.geluMul(gateUp, null, s.alloc([n, f], dt), { x, w: w.gateUpProj });
    } else {
      const gate = ops.matmul(x, w.gateProj, { out: s.alloc([n, f], dt) });
      const up = ops.matmul(x, w.upProj, { out: s.alloc([n, f], dt) });
      act = ops.geluMul(gate, up, s.alloc([n, f], dt));
    }
    return ops.matmul(act, w.downProj, { out: s.alloc([n, this.cfg.hiddenSize], dt) });
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
    const w = this.w;
    const q = s.alloc([n, hq, d], dt);
    const k = s.alloc([n, hkv, d], dt);
    const v = s.alloc([n, hkv, d], dt);
    const rope = { eps, ...this.rope };
    const kv = cache.layer(this.index);
    let prologue: Omit<nativeOps.DecodePrologue, "kvRows"> | undefined;
    if (w.qkvProj) {
      // One matmul into [q | k | v] rows. At decode, when the cache takes the new rows directly,
      // the attention op norms and rotates q and k and stores k and v itself (its prologue: on
      // CUDA qk_norm_rope's launch then the attention's, or one kernel with
      // GEMMA3_DECODE_PROLOGUE=1). Otherwise q and k are normed and rotated out of the rows by
      // qkNormRope; weights in x's dtype go in as its projection (GEMMA3_QKV_EPILOGUE=1: one GEMV
      // on CUDA, which decode no longer takes), quantized ones (fp8 with its scale) through
      // matmul first.
      const qkv = s.alloc([n, (hq + 2 * hkv) * d], dt);
      if (directKvWrite(kv, plan, dt)) {
        ops.matmul(x, w.qkvProj, { out: qkv });
        prologue = { qkv, qW: w.qNorm, kW: w.kNorm, positions: plan.positions, rope };
      } else {
        const dense = w.qkvProj.dtypeName === dt;
        if (!dense) ops.matmul(x, w.qkvProj, { out: qkv });
        const proj = dense ? { x, w: w.qkvProj } : undefined;
        ops.qkNormRope(qkv, w.qNorm, w.kNorm, plan.positions, rope, { q, k, v }, proj);
      }
    } else {
      ops.matmul(x, w.qProj, { out: q.view([n, hq * d]) });
      ops.matmul(x, w.kProj, { out: k.view([n, hkv * d]) });
      ops.matmul(x, w.vProj, { out: v.view([n, hkv * d]) });
      if (this.fusedOps) {
        ops.qkNormRope({ q, k }, w.qNorm, w.kNorm, plan.positions, rope);
      } else {
        ops.rmsnorm(q, w.qNorm, eps, q);
        ops.rmsnorm(k, w.kNorm, eps, k);
        ops.rope(q, plan.positions, rope.base, rope.scale);
        ops.rope(k, plan.positions, rope.base, rope.scale);
      }
    }

    // Through the cache: scatter + decode attention, or gather context + prefill + scatter
    // (@gemma3/kv-cache cachedAttention; the window applies on sliding layers).
    const o = cachedAttention(kv, plan, q, k, v, {
      smScale: this.smScale,
      out: s.alloc([n, hq, d], dt),
      alloc: (shape, dtype) => s.alloc(shape, dtype),
      workspace,
      ...(prologue ? { prologue } : {}),
    });
    return ops.matmul(o.view([n, hq * d]), w.oProj, {
      out: s.alloc([n, this.cfg.hiddenSize], dt),
    });
  }
}
