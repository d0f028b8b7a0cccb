// Device weight layouts chosen at load. On CUDA, q4_0 weights become q4_0s (ops.repack): the same
// bytes per row, each row's 16-byte nibble runs first and its f16 scales after, so the CUDA GEMV
// reads a block with one aligned 16-byte load instead of realigning 18-byte blocks (docs/kernels.md,
// session 8). Rows stay independent, so the fused projections' row views are remade on the new
// tensor. GEMMA3_Q4_0_LAYOUT=gguf keeps the GGUF blocks (the A/B of the layout).
import { ops, type Device, type Tensor } from "@gemma3/native";
import type { LayerWeights } from "./block.js";
import type { TextWeights } from "./text_model.js";

/** False when GEMMA3_Q4_0_LAYOUT=gguf: q4_0 weights keep the GGUF block layout on CUDA too. */
function q4SplitEnabled(): boolean {
  return globalThis.process?.env?.GEMMA3_Q4_0_LAYOUT !== "gguf";
}

/** Whether `device`'s matmul and embedding want q4_0 weights as q4_0s. */
export function prefersQ4Split(device: Device): boolean {
  return device.isCuda && q4SplitEnabled();
}

/**
 * Repacks every q4_0 weight of `w` to q4_0s in place of the original (disposed), remaking row
 * views (the fused projections' parts) on the repacked owner. `owned`: the loader's list of owners
 * to dispose on failure; replaced owners are swapped in it.
 */
export function repackQ4Weights(w: TextWeights, owned: Tensor[]): void {
  const done = new Map<Tensor, Tensor>(); // old owner -> repacked owner
  const owner = (t: Tensor): Tensor => {
    let r = done.get(t);
    if (!r) {
      r = ops.repack(t, "q4_0s");
      done.set(t, r);
      const i = owned.indexOf(t);
      if (i >= 0) owned[i] = r;
    }
    return r;
  };
  const remake = (t: Tensor): Tensor => {
    if (t.dtypeName !== "q4_0") return t;
    if (!t.base) return owner(t);
    // A row view of an owner [rows, K]: the same rows of the repacked owner.
    const base = t.base;
    const rowBytes = base.byteLength / base.shape[0]!;
    const at = t.byteOffset - base.byteOffset;
    if (t.shape.length !== 2 || t.shape[1] !== base.shape[1] || at % rowBytes !== 0)
      throw new Error(`repackQ4Weights: ${t} is not a row view of ${base}`);
    const start = at / rowBytes;
    return owner(base).slice(start, start + t.shape[0]!);
  };
  w.embedTokens = remake(w.embedTokens);
  if (w.lmHead) w.lmHead = remake(w.lmHead);
  for (const layer of w.layers) {
    for (const key of Object.keys(layer) as (keyof LayerWeights)[]) {
      const t = layer[key];
      if (t) layer[key] = remake(t);
    }
  }
  for (const old of done.keys()) old.dispose();
}
