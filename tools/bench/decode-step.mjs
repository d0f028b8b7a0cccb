// Where a batch-1 decode step's time goes, end to end, on one device (session 13).
//   node tools/bench/decode-step.mjs CONFIG [--steps N] [--quantize q4_0] [--device cuda]
// Random weights at CONFIG's shapes (packages/model/test/fixtures/configs). After a 16-token
// prompt and two decode steps (the second captures the step's CUDA graph), it times, each as the
// median of 5 runs of N steps:
//   replay   the captured graph launched N times back to back, one synchronize at the end: the
//            device's time a step, with no host work between steps (positions do not advance);
//   forward  N model.forward calls with the graph, no readback: adds the host's planning and
//            input writes a step, overlapped with the device where they can be;
//   argmax   as forward, plus the argmax and its host readback each step (synchronous decoding,
//            GEMMA3_ASYNC_DECODE=0's path without the scheduler);
//   head     the final norm, the head GEMV, its f32 cast and the argmax alone, N times.
// --only replay times just the replays (for a kernel trace: tools/trace/cupti_trace.cc).
// --prompt N: an N-token prompt (default 16), so the step attends over ~N keys.
// --capacity N: a cache of N tokens at least (decode attention plans its splits for the capacity,
// so a large one is a server's short request in a long-context cache).
// Prints one JSON line; docs/kernels.md (session 13) reads it against `gemma3 bench`.
import { parseArgs } from "node:util";
import { Device, Tensor, ops } from "@gemma3/native";
import { randomTextModel } from "@gemma3/model";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    steps: { type: "string", default: "100" },
    quantize: { type: "string" },
    device: { type: "string", default: "cuda" },
    only: { type: "string" },
    capacity: { type: "string", default: "0" },
    prompt: { type: "string", default: "16" },
  },
});
const cfgPath = positionals[0];
if (!cfgPath)
  throw new Error(
    "usage: decode-step.mjs CONFIG [--steps N] [--quantize q4_0] [--device cuda] [--only replay]",
  );
const N = Number(values.steps);
const device = Device.of(values.device);
const model = await randomTextModel(cfgPath, {
  device: values.device,
  ...(values.quantize ? { quantize: values.quantize } : {}),
});
const prompt = Array.from({ length: Number(values.prompt) }, (_, i) => 3 + ((i * 37) % 500));
const runs = 5;
const capacity = Math.max(prompt.length + 2 + (3 * runs + 2) * N + 8, Number(values.capacity));
const seq = model.newCache(capacity);
model.forward(prompt, seq).dispose();
for (let i = 0; i < 2; i++) model.forward([7], seq, { graph: true }).dispose();
await device.synchronize();
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];

async function time(fn) {
  const us = [];
  for (let r = 0; r < runs + 1; r++) {
    await device.synchronize();
    const t = performance.now();
    await fn();
    await device.synchronize();
    if (r > 0) us.push(((performance.now() - t) * 1000) / N);
  }
  return { median_us: +median(us).toFixed(1), runs_us: us.map((u) => +u.toFixed(1)) };
}

const graph = [...model.graphs.values()][0].graph; // private: the batch-1 decode graph
const out = {
  config: cfgPath,
  quantize: values.quantize ?? null,
  steps: N,
  prompt: prompt.length,
  capacity,
  nodes: graph.nodes,
};
out.replay = await time(() => {
  for (let i = 0; i < N; i++) graph.launch();
});
if (values.only === "replay") {
  console.log(JSON.stringify(out));
  process.exit(0);
}
out.forward = await time(() => {
  for (let i = 0; i < N; i++) model.forward([7], seq, { graph: true }).dispose();
});
const am = ops.argmax; // the sampler's greedy path: argmax on the device, 4 bytes read back
out.argmax = await time(async () => {
  for (let i = 0; i < N; i++) {
    const l = model.forward([7], seq, { graph: true });
    const id = am(l);
    await id.toArray();
    id.dispose();
    l.dispose();
  }
});
// The head alone: final norm, head GEMV (bf16 out), cast to f32, argmax. (The native matmul: an fp8
// head's per-row scale is not applied, which changes values, not time.)
const { hiddenSize: H, rmsNormEps: eps } = model.config;
const w = model.weights;
const xf = Float32Array.from({ length: H }, (_, i) => Math.sin(i));
const x = Tensor.from(xf, [1, H], model.dtype, device);
{
  const xn = ops.rmsnorm(x, w.norm, eps);
  out.head = await time(() => {
    for (let i = 0; i < N; i++) {
      ops.rmsnorm(x, w.norm, eps, xn);
      const y = ops.matmul(xn, w.lmHead ?? w.embedTokens);
      const f = ops.cast(y, "f32");
      const id = am(f);
      (y.dispose(), f.dispose(), id.dispose());
    }
  });
  (xn.dispose(), x.dispose());
}
console.log(JSON.stringify(out));
seq.dispose();
model.dispose();
