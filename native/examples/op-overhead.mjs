import { Tensor, ops, Device } from "@gemma3/native";
const a = Tensor.from([1, 2, 3, 4], [4], "f32"),
  b = Tensor.from([1, 2, 3, 4], [4], "f32"),
  c = Tensor.empty([4], "f32");
for (let i = 0; i < 20000; i++) ops.add(a, b, c);
await Device.cpu.synchronize();
const n = 100000;
const t = performance.now();
for (let i = 0; i < n; i++) ops.add(a, b, c);
const dt = performance.now() - t;
await Device.cpu.synchronize();
console.log(`ops.add enqueue: ${((dt * 1000) / n).toFixed(2)} µs per call (3 tensors)`);
