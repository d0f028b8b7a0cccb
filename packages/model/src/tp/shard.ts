// One rank's slice of a checkpoint tensor, read straight from the safetensors file: a row range is
// one contiguous span of the file; a column range is read in chunks of whole rows (≤ 64 MB) and
// sliced on the host, so no full tensor is ever held in memory or uploaded to a device.
import { Tensor, type Device } from "@gemma3/native";
import {
  READ_CHUNK_BYTES,
  SAFETENSORS_DTYPE_BITS,
  type Checkpoint,
  type SafetensorsDType,
} from "../safetensors.js";
import { WeightError, indexWeights, toFloat32 } from "../weights.js";
import type { Range, RankShard } from "./layout.js";

export interface ShardSpec {
  /** rows [start, end) of the stored [R, C] tensor (default all) */
  rows?: Range;
  /** columns [start, end) (default all) */
  cols?: Range;
  /** rows of the result, ≥ the rows taken; the rows past them are zero (vocabulary padding) */
  padRows?: number;
}

/** The shard of canonical layer tensor `key` rank `s` holds (undefined: the whole tensor). */
export function layerShard(key: string, s: RankShard, headDim: number): ShardSpec | undefined {
  const heads = ([a, b]: Range): Range => [a * headDim, b * headDim];
  switch (key) {
    case "self_attn.q_proj":
      return { rows: heads(s.qHeads) };
    case "self_attn.k_proj":
    case "self_attn.v_proj":
      return { rows: heads(s.kvHeads) };
    case "self_attn.o_proj":
      return { cols: heads(s.qHeads) };
    case "mlp.gate_proj":
    case "mlp.up_proj":
      return { rows: s.ffn };
    case "mlp.down_proj":
      return { cols: s.ffn };
    default:
      return undefined; // norms: replicated
  }
}

const FLOAT_SOURCES: ReadonlySet<SafetensorsDType> = new Set([
  "F32",
  "BF16",
  "F16",
  "F8_E4M3",
  "F8_E5M2",
  "F64",
]);

/**
 * Uploads rows × cols of the 2-D canonical tensor `canonical` to `device` as `dtype`. Same-dtype
 * loads copy raw bits; other float sources decode to float32 and round to nearest even on upload
 * (as loadTensor). "lm_head" falls back to embed_tokens (tied).
 * @returns [padRows ?? rows, cols] (caller disposes)
 */
export async function loadShard(
  ckpt: Checkpoint,
  canonical: string,
  device: Device,
  dtype: "f32" | "bf16",
  spec: ShardSpec = {},
  chunkBytes = READ_CHUNK_BYTES,
): Promise<Tensor> {
  const { names } = indexWeights(ckpt);
  const key =
    names.get(canonical) ?? (canonical === "lm_head" ? names.get("embed_tokens") : undefined);
  const entry = key === undefined ? undefined : ckpt.tensors.get(key);
  if (key === undefined || !entry)
    throw new WeightError(`${ckpt.dir}: no tensor "${canonical}"`, canonical, ckpt.dir);
  const { file, info } = entry;
  if (info.shape.length !== 2 || !FLOAT_SOURCES.has(info.dtype))
    throw new WeightError(
      `${file.path}: "${key}" is ${info.dtype} [${info.shape.join(", ")}]; a shard needs a 2-D float tensor`,
      canonical,
      file.path,
    );
  const [R, C] = info.shape as [number, number];
  const [r0, r1] = spec.rows ?? [0, R];
  const [c0, c1] = spec.cols ?? [0, C];
  const outRows = spec.padRows ?? r1 - r0;
  if (!(0 <= r0 && r0 <= r1 && r1 <= R && 0 <= c0 && c0 < c1 && c1 <= C && outRows >= r1 - r0))
    throw new RangeError(
      `loadShard ${canonical} [${R}, ${C}]: rows [${r0}, ${r1}), cols [${c0}, ${c1}), ${outRows} rows out of range`,
    );
  const es = SAFETENSORS_DTYPE_BITS[info.dtype] / 8;
  const rowBytes = C * es;
  const width = (c1 - c0) * es;
  const raw =
    (info.dtype === "F32" && dtype === "f32") || (info.dtype === "BF16" && dtype === "bf16");
  const t = (outRows > r1 - r0 ? Tensor.zeros : Tensor.empty)([outRows, c1 - c0], dtype, device);
  try {
    const rowsPerChunk = Math.max(1, Math.floor(chunkBytes / rowBytes));
    for (let r = r0; r < r1; r += rowsPerChunk) {
      const n = Math.min(r1, r + rowsPerChunk) - r;
      const chunk = new Uint8Array(n * rowBytes);
      await file.readInto(key, r * rowBytes, chunk);
      let packed = chunk;
      if (width !== rowBytes) {
        packed = new Uint8Array(n * width);
        for (let i = 0; i < n; i++)
          packed.set(
            chunk.subarray(i * rowBytes + c0 * es, i * rowBytes + c0 * es + width),
            i * width,
          );
      }
      const data = !raw
        ? toFloat32(packed, info.dtype)
        : dtype === "f32"
          ? new Float32Array(packed.buffer, packed.byteOffset, packed.byteLength / 4)
          : new Uint16Array(packed.buffer, packed.byteOffset, packed.byteLength / 2);
      t.slice(r - r0, r - r0 + n).write(data);
    }
    return t;
  } catch (e) {
    t.dispose();
    throw e;
  }
}
