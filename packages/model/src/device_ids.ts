// Decode tokens whose ids are on the device only (pipelined decoding, Scheduler asyncDecode: the
// previous step's argmax): how forwardBatch checks them and copies them into the step's ids.
import { ShapeError, type Tensor } from "@gemma3/native";

/**
 * A decode token whose id is on the device only (pipelined decoding: the previous step's argmax).
 * tensor: [rows] i32 on the model's device; the token is row `row`.
 */
export interface DeviceIds {
  tensor: Tensor;
  row: number;
}

/** Checks every step's idsFrom (before the step is planned): [rows] i32 on `device`, row in range. */
export function checkDeviceIds(steps: readonly { idsFrom?: DeviceIds }[], device: string): void {
  for (const { idsFrom: f } of steps) {
    if (!f) continue;
    const t = f.tensor;
    if (t.dtypeName !== "i32" || t.shape.length !== 1 || t.device.toString() !== device)
      throw new ShapeError(`forward: idsFrom must be [rows] i32 on ${device}, got ${t}`, "E_SHAPE");
    if (!Number.isInteger(f.row) || f.row < 0 || f.row >= t.shape[0]!)
      throw new RangeError(`forward: idsFrom row ${f.row} outside [0, ${t.shape[0]})`);
  }
}

/**
 * Copies the device-side ids of `steps` (idsFrom) into their rows of `idsT` ([numTokens] i32), in
 * stream order after the host write of the other rows: one copy per run of consecutive rows of
 * one source (the whole batch in the steady state of pipelined decoding).
 */
export function copyDeviceIds(
  idsT: Tensor,
  steps: readonly { ids: readonly number[]; idsFrom?: DeviceIds }[],
): void {
  let at = 0;
  let run: { src: Tensor; from: number; to: number; n: number } | null = null;
  const flush = () => {
    if (run) idsT.slice(run.to, run.to + run.n).copyFrom(run.src.slice(run.from, run.from + run.n));
    run = null;
  };
  for (const { ids, idsFrom: f } of steps) {
    if (!f) {
      flush();
      at += ids.length;
      continue;
    }
    const t = f.tensor;
    if (run && run.src === t && run.from + run.n === f.row && run.to + run.n === at) run.n++;
    else {
      flush();
      run = { src: t, from: f.row, to: at, n: 1 };
    }
    at++;
  }
  flush();
}
