// The Gemma 3 multimodal projector (HF Gemma3MultiModalProjector):
//   grid = last_hidden_state as a side × side patch grid per image
//   t = avg_pool(grid, k = side / tokens_per_side)   (k × k, stride k)
//   features = rms_norm(t) · (1 + w_norm) · W        (W: [vision hidden, text hidden], a plain x·W)
import { Tensor, ops } from "@gemma3/native";
import { Scratch } from "@gemma3/model";
import type { VisionDType } from "./siglip.js";

export class Gemma3MultiModalProjector {
  /** Patches per side of an image (image_size / patch_size). */
  readonly patchesPerSide: number;
  /** √mm_tokens_per_image */
  readonly tokensPerSide: number;
  /** Average-pool kernel and stride. */
  readonly kernel: number;

  constructor(
    /** mm_soft_emb_norm weight [vision hidden] */
    readonly softEmbNorm: Tensor,
    /** mm_input_projection_weight transposed: [text hidden, vision hidden] */
    readonly projection: Tensor,
    patchesPerSide: number,
    readonly tokensPerImage: number,
    /** vision_config.layer_norm_eps (HF builds mm_soft_emb_norm with it) */
    readonly eps: number,
    readonly dtype: VisionDType,
  ) {
    this.patchesPerSide = patchesPerSide;
    this.tokensPerSide = Math.round(Math.sqrt(tokensPerImage));
    this.kernel = patchesPerSide / this.tokensPerSide;
  }

  /** Scratch bytes `forward` takes for n images. */
  scratchBytes(n: number): number {
    return 2 * Scratch.bytes([n * this.tokensPerImage, this.softEmbNorm.shape[0]!], this.dtype);
  }

  /**
   * @param h last_hidden_state [n · side², vision hidden]
   * @param out [n, tokens_per_image, text hidden]
   */
  forward(h: Tensor, n: number, s: Scratch, out: Tensor): Tensor {
    const C = h.shape[1]!;
    const T = this.tokensPerImage;
    const pooled = ops.avgPool2d(
      h.view([n, this.patchesPerSide ** 2, C]),
      this.kernel,
      s.alloc([n, T, C], this.dtype),
    );
    const normed = ops.rmsnorm(pooled, this.softEmbNorm, this.eps, s.alloc([n, T, C], this.dtype));
    return ops.matmul(normed, this.projection, { out });
  }
}
