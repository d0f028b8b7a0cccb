// The SigLIP vision tower (HF SiglipVisionTransformer, no head) on @gemma3/native ops, images in a
// batch (Pan & Scan crops) as rows of one matrix:
//   h = patches(pixels) · W_patchᵀ + b_patch + pos        (the stride = kernel Conv2d as a matmul)
//   per layer: h += out_proj(attn(layer_norm1(h)));  h += fc2(gelu_tanh(fc1(layer_norm2(h))))
//   h = post_layernorm(h)
// Attention is bidirectional within each image (scale head_dim^-½), q/k/v/out Linears with bias.
import { Tensor, ops } from "@gemma3/native";
import { Scratch, type SiglipVisionConfig } from "@gemma3/model";
import type { LinearWeights, SiglipLayerWeights, VisionWeights } from "./vision_weights.js";

export type VisionDType = "f32" | "bf16";

export class SiglipVisionTower {
  readonly hidden: number;
  readonly numHeads: number;
  readonly headDim: number;
  /** Patches per image (image_size / patch_size)². */
  readonly numPatches: number;

  constructor(
    readonly cfg: SiglipVisionConfig,
    readonly w: VisionWeights,
    readonly dtype: VisionDType,
  ) {
    this.hidden = cfg.hidden_size;
    this.numHeads = cfg.num_attention_heads;
    this.headDim = cfg.hidden_size / cfg.num_attention_heads;
    this.numPatches = (cfg.image_size / cfg.patch_size) ** 2;
  }

  /** Scratch bytes `forward` takes for n images (what it allocates). */
  scratchBytes(n: number): number {
    const { hidden: h, dtype: dt } = this;
    const N = n * this.numPatches;
    const p = this.cfg.patch_size;
    const rows = (cols: number) => Scratch.bytes([N, cols], dt);
    const patches = rows(this.cfg.num_channels * p * p);
    // x, qkv (3), attention out, out_proj, fc1, fc2
    const layer = 7 * rows(h) + rows(this.cfg.intermediate_size);
    return rows(h) + Math.max(patches, layer + 2 * Scratch.bytes([n + 1], "i32"));
  }

  /**
   * @param pixels [n, C, S, S] f32 on the tower's device, normalized to [-1, 1]
   * @returns last_hidden_state [n · num_patches, hidden] in the scratch (valid until it rewinds)
   */
  forward(pixels: Tensor, s: Scratch): Tensor {
    const n = pixels.shape[0]!;
    const N = n * this.numPatches;
    const dt = this.dtype;
    const h = s.alloc([N, this.hidden], dt);
    const mark = s.mark();
    this.embed(pixels, h, s);
    s.rewind(mark);

    // Each image is one sequence of the ragged batch: qo = kv = [0, P, 2P, …].
    const indptr = Array.from({ length: n + 1 }, (_, i) => i * this.numPatches);
    const qoIndptr = s.alloc([n + 1], "i32");
    qoIndptr.write(indptr);
    const kvIndptr = s.alloc([n + 1], "i32");
    kvIndptr.write(indptr);
    const layerMark = s.mark();
    for (const lw of this.w.layers) {
      this.layer(h, lw, qoIndptr, kvIndptr, s);
      s.rewind(layerMark); // the layer's temporaries are dead once its ops are enqueued
    }
    const { w, b } = this.w.postLayernorm;
    return ops.layernorm(h, w, b, this.cfg.layer_norm_eps, h);
  }

  /** h [N, hidden] ← patches · W_patchᵀ + b_patch + position embedding (per image). */
  private embed(pixels: Tensor, h: Tensor, s: Scratch): void {
    const p = this.cfg.patch_size;
    const n = pixels.shape[0]!;
    const P = this.numPatches;
    const K = this.cfg.num_channels * p * p;
    const patches = ops.patchify(pixels, p, {
      dtype: this.dtype,
      out: s.alloc([n, P, K], this.dtype),
    });
    ops.matmul(patches.view([n * P, K]), this.w.patchEmbedding.w, { out: h });
    // HF: T(conv + bias) then + position_embedding (rounded again).
    for (let i = 0; i < n; i++) {
      const hi = h.slice(i * P, (i + 1) * P);
      ops.biasAdd(hi, this.w.patchEmbedding.b, { residual: this.w.positionEmbedding, out: hi });
    }
  }

  /** One encoder layer, in place on h [N, hidden]. */
  private layer(
    h: Tensor,
    w: SiglipLayerWeights,
    qoIndptr: Tensor,
    kvIndptr: Tensor,
    s: Scratch,
  ): void {
    const eps = this.cfg.layer_norm_eps;
    const dt = this.dtype;
    const x = ops.layernorm(h, w.layerNorm1.w, w.layerNorm1.b, eps, s.alloc(h.shape, dt));
    const r = this.attention(x, w, qoIndptr, kvIndptr, s);
    linear(r, w.out, s, { residual: h, out: h });
    const x2 = ops.layernorm(h, w.layerNorm2.w, w.layerNorm2.b, eps, x);
    const f = linear(x2, w.fc1, s, { gelu: true });
    linear(f, w.fc2, s, { residual: h, out: h });
  }

  /** x [N, hidden] → attn(x) [N, hidden] (before out_proj) */
  private attention(
    x: Tensor,
    w: SiglipLayerWeights,
    qoIndptr: Tensor,
    kvIndptr: Tensor,
    s: Scratch,
  ): Tensor {
    const N = x.shape[0]!;
    const [H, D] = [this.numHeads, this.headDim];
    const qkv = linear(x, w.qkv, s); // [N, 3·hidden]: each row [q | k | v]
    const o = ops.attentionPrefillQkv(qkv, H, H, qoIndptr, kvIndptr, {
      smScale: D ** -0.5,
      causal: false,
      maxQLen: this.numPatches,
      out: s.alloc([N, H, D], this.dtype),
    });
    return o.view([N, this.hidden]);
  }
}

/**
 * A Linear with bias and its fused epilogue: [residual +] [gelu_tanh](x · Wᵀ + b).
 * @param x [N, in]
 * @returns [N, out] (in `opts.out` when given, else in the scratch)
 */
function linear(
  x: Tensor,
  w: LinearWeights,
  s: Scratch,
  opts: { gelu?: boolean; residual?: Tensor; out?: Tensor } = {},
): Tensor {
  const N = x.shape[0]!;
  const y = ops.matmul(x, w.w, { out: s.alloc([N, w.w.shape[0]!], x.dtypeName) });
  return ops.biasAdd(y, w.b, {
    ...(opts.gelu ? { gelu: true } : {}),
    ...(opts.residual ? { residual: opts.residual } : {}),
    out: opts.out ?? y,
  });
}
