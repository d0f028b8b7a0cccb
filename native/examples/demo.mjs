// A tour of @gemma3/native on this machine: devices, then one Gemma-3-4B-shaped MLP block step
// (RMSNorm → gate/up GEMV → GELU·up → down GEMV → residual add) on every device, with timings.
// Random weights: this shows the plumbing and the speed of the kernels, not a language model.
// (The `gemma3` CLI on a real or demo checkpoint comes with the text-model issue.)
import { Device, Tensor, buildInfo, deviceCount, ops } from "@gemma3/native";

const hidden = Number(process.env.DEMO_HIDDEN ?? 2560);
const inter = Number(process.env.DEMO_INTER ?? 10240);

function random(n, std) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (Math.random() * 2 - 1) * std * Math.sqrt(3);
  return a;
}

/** @param {Device} device @param {"bf16" | "q8_0" | "q4_0"} wdtype */
async function mlpStep(device, wdtype) {
  const up = (data, shape) => {
    const t = Tensor.from(data, shape, "bf16", device);
    if (wdtype === "bf16") return t;
    const q = ops.quantize(t, wdtype).data;
    t.dispose();
    return q;
  };
  const x = Tensor.from(random(hidden, 1), [1, hidden], "bf16", device);
  const norm = Tensor.from(random(hidden, 0.1), [hidden], "bf16", device);
  const gateUp = up(random(2 * inter * hidden, 1 / Math.sqrt(hidden)), [2 * inter, hidden]);
  const down = up(random(hidden * inter, 1 / Math.sqrt(inter)), [hidden, inter]);
  const h = ops.rmsnorm(x, norm, 1e-6);
  const gu = Tensor.empty([1, 2 * inter], "bf16", device);
  const act = Tensor.empty([1, inter], "bf16", device);
  const y = Tensor.empty([1, hidden], "bf16", device);
  const step = () => {
    ops.rmsnorm(x, norm, 1e-6, h);
    ops.matmul(h, gateUp, { out: gu });
    ops.geluMul(gu, null, act);
    ops.matmul(act, down, { out: y });
    ops.add(x, y, y);
  };
  step();
  await device.synchronize();
  const iters = device.isCuda ? 200 : 5;
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) step();
  await device.synchronize();
  const ms = (performance.now() - t0) / iters;
  const bytes = gateUp.byteLength + down.byteLength;
  const out = await y.toArray();
  const finite = out.every(Number.isFinite);
  console.log(
    `  ${device.toString().padEnd(6)} ${wdtype.padEnd(5)} ${ms.toFixed(3).padStart(8)} ms/step  ` +
      `${(bytes / ms / 1e6).toFixed(0).padStart(5)} GB/s weights  y[0..3] = ${Array.from(out.slice(0, 3), (v) => v.toFixed(3)).join(", ")}${finite ? "" : "  (non-finite!)"}`,
  );
  for (const t of [x, norm, gateUp, down, h, gu, act, y]) t.dispose();
}

const info = buildInfo();
console.log(
  `@gemma3/native — CUDA backend built: ${info.cuda} (cuBLAS: ${info.cublas}), CPU threads: ${info.cpuThreads}`,
);
const devices = [
  Device.cpu,
  ...Array.from({ length: deviceCount() }, (_, i) => Device.of(`cuda:${i}`)),
];
for (const d of devices) {
  const m = d.memoryInfo();
  console.log(
    `  ${d}: ${d.info().name}, ${(m.free / 2 ** 30).toFixed(1)} / ${(m.total / 2 ** 30).toFixed(1)} GiB free`,
  );
}
console.log(
  `\nOne MLP block step at Gemma 3 4B shape (hidden ${hidden}, intermediate ${inter}), batch 1, random weights:`,
);
for (const d of devices) for (const w of ["bf16", "q8_0", "q4_0"]) await mlpStep(d, w);
