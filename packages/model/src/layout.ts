// Device weight layouts chosen at load. On CUDA, q4_0 / q8_0 weights become q4_0s / q8_0s
// (ops.repack): the same bytes per row, each row's quant runs first and its f16 scales after, so the
// CUDA GEMV reads a block with aligned 16-byte loads instead of realigning 18- / 34-byte blocks
// (docs/kernels.md, session 8). Rows stay independent, so the fused projections' row views are
// remade on the new tensor. GEMMA3_Q4_0_LAYOUT=gguf / GEMMA3_Q8_0_LAYOUT=gguf keep the GGUF blocks
// (the A/Bs of the layouts).
import { ops, type Device, type Tensor } from "@gemma3/native";
import type { LayerWeights } from "./block.js";
import type { TextWeights } from "./text_model.js";

/** The GGUF block formats with a split layout, and the variable that keeps them as blocks. */
const SPLIT = {
  q4_0: ["q4_0s", "GEMMA3_Q4_0_LAYOUT"],
  q8_0: ["q8_0s", "GEMMA3_Q8_0_LAYOUT"],
} as const;
type Gguf = keyof typeof SPLIT;

/** The GGUF formats `device` wants split: on CUDA, each unless its variable is "gguf". */
export function splitFormats(device: Device): Gguf[] {
  if (!device.isCuda) return [];
  return (Object.keys(SPLIT) as Gguf[]).filter(
    (f) => globalThis.process?.env?.[SPLIT[f][1]] !== "gguf",
  );
}

/**
 * Repacks every weight of `w` in one of `formats` to its split layout in place of the original
 * (disposed), remaking row views (the fused projections' parts) on the repacked owner. `owned`:
 * the loader's list of owners to dispose on failure; replaced owners are swapped in it.
 */
export function repackSplitWeights(
  w: TextWeights,
  formats: readonly Gguf[],
  owned: Tensor[],
): void {
  const done = new Map<Tensor, Tensor>(); // old owner -> repacked owner
  const owner = (t: Tensor): Tensor => {
    let r = done.get(t);
    if (!r) {
      r = ops.repack(t, SPLIT[t.dtypeName as Gguf][0]);
      done.set(t, r);
      const i = owned.indexOf(t);
      if (i >= 0) owned[i] = r;
    }
    return r;
  };
  const remake = (t: Tensor): Tensor => {
    if (!(formats as readonly string[]).includes(t.dtypeName)) return t;
    if (!t.base) return owner(t);
    // A row view of an owner [rows, K]: the same rows of the repacked owner.
    const base = t.base;
    const rowBytes = base.byteLength / base.shape[0]!;
    const at = t.byteOffset - base.byteOffset;
    if (t.shape.length !== 2 || t.shape[1] !== base.shape[1] || at % rowBytes !== 0)
      throw new Error(`repackSplitWeights: ${t} is not a row view of ${base}`);
    const start = at / rowBytes;
    return owner(base).slice(start, start + t.shape[0]!);
  };
  // The originals go as soon as their tensors are remade (a layer's views share its owners), so the
  // device holds one layer's weights twice at most, not the whole model (27B q4_0: ~15 GB).
  const flush = () => {
    for (const old of done.keys()) old.dispose();
    done.clear();
  };
  w.embedTokens = remake(w.embedTokens);
  if (w.lmHead) w.lmHead = remake(w.lmHead);
  flush();
  for (const layer of w.layers) {
    for (const key of Object.keys(layer) as (keyof LayerWeights)[]) {
      const t = layer[key];
      if (t) layer[key] = remake(t);
    }
    flush();
  }
}
