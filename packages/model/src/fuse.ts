// Fusing a layer's projections at load: [q; k; v] and [gate; up] become one weight each, so a step
// runs one matmul where it ran three (or two). A weight's rows are independent in every format the
// loaders produce (f32/bf16 rows, q8_0/q4_0/K-quant rows of whole blocks, fp8 rows with one scale
// each), so the fused weight is the parts' stored rows one after the other, and the per-row fp8
// scales likewise. The parts become row views of it: nothing is held twice.
import { Tensor } from "@gemma3/native";
import type { LayerWeights } from "./block.js";
import { ScaledWeight } from "./quantize.js";

/** The parts' rows in one new tensor, and a row view of it per part; null when they can't fuse. */
function concatRows(parts: readonly Tensor[]): { whole: Tensor; views: Tensor[] } | null {
  const [first] = parts;
  if (!first || first.shape.length !== 2) return null;
  const scaled = first instanceof ScaledWeight;
  const fits = parts.every(
    (p) =>
      p.dtypeName === first.dtypeName &&
      p.shape.length === 2 &&
      p.shape[1] === first.shape[1] &&
      p.device.toString() === first.device.toString() &&
      p instanceof ScaledWeight === scaled,
  );
  // Mixed formats (a GGUF Q4_K_M keeps v_proj in q6_k beside q4_k q/k) stay separate.
  if (!fits) return null;
  const rows = parts.map((p) => p.shape[0]!);
  const starts = rows.map((_, i) => rows.slice(0, i).reduce((a, b) => a + b, 0));
  const total = rows.reduce((a, b) => a + b, 0);
  const stack = (ts: readonly Tensor[], shape: number[]) => {
    const t = Tensor.empty(shape, ts[0]!.dtypeName, first.device);
    ts.forEach((p, i) => t.slice(starts[i]!, starts[i]! + rows[i]!).copyFrom(p));
    return t;
  };
  if (!scaled) {
    const whole = stack(parts, [total, first.shape[1]!]);
    return { whole, views: parts.map((_, i) => whole.slice(starts[i]!, starts[i]! + rows[i]!)) };
  }
  const sw = parts as readonly ScaledWeight[];
  const data = stack(
    sw.map((p) => p.data),
    [total, first.shape[1]!],
  );
  const scale = stack(
    sw.map((p) => p.scale),
    [total],
  );
  const whole = ScaledWeight.of(data, scale);
  const views = parts.map((_, i) => {
    const [a, b] = [starts[i]!, starts[i]! + rows[i]!];
    return ScaledWeight.of(data.slice(a, b), scale.slice(a, b));
  });
  return { whole, views };
}

/**
 * Fuses q/k/v into `qkvProj` and gate/up into `gateUpProj` (LayerWeights), disposing the separate
 * tensors, which become row views of the fused ones. Parts of different formats stay separate.
 * @returns the fused tensors (owners the caller disposes with the layer)
 */
export function fuseProjections(w: LayerWeights): Tensor[] {
  const made: Tensor[] = [];
  const qkv = concatRows([w.qProj, w.kProj, w.vProj]);
  if (qkv) {
    for (const t of [w.qProj, w.kProj, w.vProj]) t.dispose();
    w.qkvProj = qkv.whole;
    [w.qProj, w.kProj, w.vProj] = qkv.views as [Tensor, Tensor, Tensor];
    made.push(qkv.whole);
  }
  const gateUp = concatRows([w.gateProj, w.upProj]);
  if (gateUp) {
    for (const t of [w.gateProj, w.upProj]) t.dispose();
    w.gateUpProj = gateUp.whole;
    [w.gateProj, w.upProj] = gateUp.views as [Tensor, Tensor];
    made.push(gateUp.whole);
  }
  return made;
}
