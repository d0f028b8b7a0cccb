// Tensor parallelism (issue 11): the model split over N ranks against the one-device model and HF
// transformers' float32 goldens, on the tiny fixtures: tiny-1b (4 heads, 1 KV head: the KV head is
// replicated on every rank) and tiny-27b (4 heads, 2 KV heads: split at N = 2, replicated in pairs
// at N = 4). CI runs every rank on "cpu" (the host all-reduce); with two or more GPUs the ranks go
// on cuda:0…N−1 (NCCL when built, and the host fallback).
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  Device,
  Tensor,
  UnsupportedError,
  buildInfo,
  deviceCount,
  f32ToBf16,
} from "@gemma3/native";
import {
  TensorParallelTextModel,
  loadConfig,
  loadShard,
  loadTensor,
  loadTensorParallelModel,
  loadTextModel,
  openCheckpoint,
  tensorParallelLayout,
  type KVSequence,
  type Gemma3Config,
  type TextModel,
  type TextWeights,
} from "../src/index.js";
import { argmax, fixtures, maxAbsDiff } from "./golden.js";
import { removeTempDirs, tempDir, writeSharded, type TensorSpec } from "./safetensors_writer.js";

interface Goldens {
  prompt_ids: number[];
  greedy_ids: number[];
  argmax: number[];
  top2_margin: number[];
  vocab: number;
}

function golden(name: string) {
  const dir = join(fixtures, name);
  const meta = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as Goldens;
  const b = readFileSync(join(dir, "logits.f32"));
  return { dir, meta, logits: new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4) };
}

async function host(t: Tensor): Promise<Float32Array> {
  const v = (await t.toArray()) as Float32Array;
  t.dispose();
  return v;
}

/** Prompt logits [T, V] (all positions), then `steps` greedy tokens with their logits. */
async function run(model: TextModel, prompt: number[], steps: number, V: number) {
  const seq = model.newCache(prompt.length + steps + 1);
  const logits = await host(model.forward(prompt, seq, { allLogits: true }));
  const ids: number[] = [];
  const stepLogits = new Float32Array(steps * V);
  let next = argmax(logits.subarray((prompt.length - 1) * V));
  for (let i = 0; i < steps; i++) {
    ids.push(next);
    const l = await host(model.forward([next], seq, { graph: true }));
    stepLogits.set(l, i * V);
    next = argmax(l);
  }
  seq.dispose();
  return { logits, ids, stepLogits };
}

/**
 * bf16: the TP model's error against HF's float32 logits is of the one-device bf16 model's size
 * (each rank's partial o_proj / down sum is rounded to bf16 before the all-reduce, one rounding
 * more per branch than one device; measured on CPU: 0.07–0.105 for TP, 0.08–0.106 for one device),
 * and its argmax agrees with HF at >= 99% of the positions whose HF top-2 margin > 0.05 (the bar of
 * parity.test.ts).
 */
async function bf16Parity(
  name: string,
  devices: string[],
  one: string,
  collective: "auto" | "nccl" | "host" = "auto",
) {
  const g = golden(name);
  const V = g.meta.vocab;
  const T = g.meta.prompt_ids.length;
  const single = await loadTextModel(g.dir, { device: one, dtype: "bf16" });
  const ref = await run(single, g.meta.prompt_ids, 0, V);
  single.dispose();
  const tp = await loadTensorParallelModel(g.dir, { devices, dtype: "bf16", collective });
  const got = await run(tp, g.meta.prompt_ids, 0, V);
  tp.dispose();
  const dOne = maxAbsDiff(ref.logits, g.logits);
  const dTp = maxAbsDiff(got.logits, g.logits);
  let counted = 0;
  let agree = 0;
  for (let t = 0; t < T; t++)
    if (g.meta.top2_margin[t]! > 0.05) {
      counted++;
      if (argmax(got.logits.subarray(t * V, (t + 1) * V)) === g.meta.argmax[t]) agree++;
    }
  console.log(
    `${name} bf16 TP=${devices.length} on ${devices[0]} (${collective}): max |Δ| vs HF ${dTp.toFixed(4)} ` +
      `(one device ${dOne.toFixed(4)}, TP vs one ${maxAbsDiff(got.logits, ref.logits).toFixed(4)}), ` +
      `argmax ${agree}/${counted}`,
  );
  expect(dTp).toBeLessThan(1.5 * dOne + 0.05);
  expect(counted).toBeGreaterThan(T / 2);
  expect(agree / counted).toBeGreaterThanOrEqual(0.99);
}

// CPU float32 on both sides. TP changes only the order of two sums per layer (each rank's partial
// o_proj / down product, then their all-reduce) and nothing else: ~1e-6 relative on logits of unit
// scale (measured below 1e-5), so 1e-4 absolute against the one-device model and the 1e-3
// against HF (as parity.test.ts).
const TP_TOL = 1e-4;
const HF_TOL = 1e-3;

const ones = (n: number) => Array.from({ length: n }, () => "cpu");

for (const name of ["tiny-1b", "tiny-27b"]) {
  describe(`${name}: tensor parallel on CPU ranks`, async () => {
    const g = golden(name);
    const V = g.meta.vocab;
    const steps = g.meta.greedy_ids.length;
    const single = await loadTextModel(g.dir, { device: "cpu", dtype: "f32" });
    const ref = await run(single, g.meta.prompt_ids, steps, V);
    afterAll(() => single.dispose());

    for (const n of [2, 4])
      it(`N = ${n}: logits equal the one-device model's; greedy ids equal HF's`, async () => {
        const model = await loadTensorParallelModel(g.dir, { devices: ones(n), dtype: "f32" });
        expect(model).toBeInstanceOf(TensorParallelTextModel);
        expect(model.comm.backend).toBe("host");
        // Each rank's shards are fused ([q; k; v] and [gate; up] of its heads and units).
        const ranks = (
          model as unknown as { ranks: { config: Gemma3Config; weights: TextWeights }[] }
        ).ranks;
        for (const rk of ranks) {
          const w = rk.weights.layers[0]!;
          const { numAttentionHeads: hq, numKeyValueHeads: hkv, headDim: d } = rk.config;
          expect(w.qkvProj?.shape[0]).toBe((hq + 2 * hkv) * d);
          expect(w.gateUpProj?.shape[0]).toBe(2 * rk.config.intermediateSize);
        }
        const ours = await run(model, g.meta.prompt_ids, steps, V);
        model.dispose();
        const dTp = maxAbsDiff(ours.logits, ref.logits);
        const dHf = maxAbsDiff(ours.logits, g.logits);
        expect(dTp).toBeLessThan(TP_TOL);
        expect(dHf).toBeLessThan(HF_TOL);
        expect(maxAbsDiff(ours.stepLogits, ref.stepLogits)).toBeLessThan(TP_TOL);
        expect(ours.ids).toEqual(g.meta.greedy_ids);
        console.log(
          `${name} TP=${n}: max |Δ| vs TP=1 ${dTp.toExponential(2)}, vs HF ${dHf.toExponential(2)}`,
        );
      });

    it("bf16, N = 2 and 4: as close to HF as the one-device bf16 model", async () => {
      for (const n of [2, 4]) await bf16Parity(name, ones(n), "cpu");
    });

    it("N = 2: a batched step of prefill chunks and decodes, a fork and a rollback", async () => {
      const model = await loadTensorParallelModel(g.dir, { devices: ones(2), dtype: "f32" });
      const p = g.meta.prompt_ids;
      // The same schedule on both models; every step's logits compared.
      const script = async (m: TextModel) => {
        const cache = m.newKVCache({ maxSeqs: 4, maxSeqLen: 64, pageSize: 8, rollback: 2 });
        const [a, b] = [cache.sequence(), cache.sequence()];
        const out: Float32Array[] = [];
        const step = async (s: { seq: KVSequence; ids: number[] }[], all = false) =>
          out.push(await host(m.forwardBatch(s, { allLogits: all })));
        await step(
          [
            { seq: a, ids: p.slice(0, 20) },
            { seq: b, ids: p.slice(5, 12) },
          ],
          true,
        );
        const c = cache.sequence();
        await step([
          { seq: a, ids: [p[20]!] },
          { seq: b, ids: [p[12]!] },
          { seq: c, ids: p.slice(21, 33) },
        ]);
        const d = a.fork();
        await step([
          { seq: a, ids: [7] },
          { seq: d, ids: [9] },
          { seq: c, ids: [p[33]!] },
        ]);
        a.trim(a.length - 1);
        await step(
          [
            { seq: a, ids: [9] },
            { seq: b, ids: p.slice(13, 30) },
          ],
          true,
        );
        for (const s of [a, b, c, d]) s.dispose();
        cache.dispose();
        return out;
      };
      const want = await script(single);
      const got = await script(model);
      model.dispose();
      expect(got.length).toBe(want.length);
      got.forEach((x, i) => expect(maxAbsDiff(x, want[i]!), `step ${i}`).toBeLessThan(TP_TOL));
      // The fork decoded the same token after the same prefix as the trimmed original: same logits.
      expect(maxAbsDiff(got[3]!.subarray(0, V), got[2]!.subarray(V, 2 * V))).toBeLessThan(TP_TOL);
    });
  });
}

describe("tiny-1b: quantizeHead q8_0 on CPU ranks", () => {
  it("N = 2 and 4: each rank's padded table in q8_0; logits equal the one-device model's", async () => {
    // Rows quantize independently, so each rank's vocabulary rows hold the blocks one device
    // holds (the padding rows are zero blocks): TP changes only the summation order, as above.
    const g = golden("tiny-1b");
    const V = g.meta.vocab;
    const steps = g.meta.greedy_ids.length;
    const single = await loadTextModel(g.dir, {
      device: "cpu",
      dtype: "f32",
      quantizeHead: "q8_0",
    });
    expect(single.weights.embedTokens.dtypeName).toBe("q8_0");
    const ref = await run(single, g.meta.prompt_ids, steps, V);
    single.dispose();
    for (const n of [2, 4]) {
      const tp = await loadTensorParallelModel(g.dir, {
        devices: ones(n),
        dtype: "f32",
        quantizeHead: "q8_0",
      });
      const ranks = (tp as unknown as { ranks: { weights: TextWeights }[] }).ranks;
      for (const rk of ranks) {
        expect(rk.weights.embedTokens.dtypeName).toBe("q8_0");
        expect(rk.weights.embedTokens.shape).toEqual([tp.layout.vocabPerRank + 1, 64]);
        expect(rk.weights.layers[0]!.downProj.dtypeName).toBe("f32");
      }
      const got = await run(tp, g.meta.prompt_ids, steps, V);
      tp.dispose();
      expect(maxAbsDiff(got.logits, ref.logits)).toBeLessThan(TP_TOL);
      expect(maxAbsDiff(got.stepLogits, ref.stepLogits)).toBeLessThan(TP_TOL);
      expect(got.ids).toEqual(ref.ids);
    }
  });
});

/**
 * `n` sequences of one cache decoding together (batch n) for `steps` greedy steps after their
 * prompts (rotations of the golden prompt), with or without graph replay; every step's logits.
 */
async function decodeBatch(
  model: TextModel,
  graph: boolean,
  n: number,
  steps: number,
  P: number[],
) {
  const cache = model.newKVCache({ maxSeqs: n, maxSeqLen: P.length + steps + 1 });
  const seqs = Array.from({ length: n }, () => cache.sequence(P.length + steps + 1));
  const V = model.config.vocabSize;
  const first = model.forwardBatch(
    seqs.map((seq, i) => ({ seq, ids: [...P.slice(i % P.length), ...P.slice(0, i % P.length)] })),
  );
  let rows = await host(first);
  const out: Float32Array[] = [];
  const views: boolean[] = [];
  for (let t = 0; t < steps; t++) {
    const next = seqs.map((_, i) => argmax(rows.subarray(i * V, (i + 1) * V)));
    const l = model.forwardBatch(
      seqs.map((seq, i) => ({ seq, ids: [next[i]!] })),
      { graph },
    );
    views.push(l.isView);
    rows = Float32Array.from(await host(l));
    out.push(rows);
  }
  for (const s of seqs) s.dispose();
  cache.dispose();
  return { out, views };
}

describe("tiny-27b, N = 2 CPU ranks: graph-replayed decode", () => {
  it("equals eager decode bit for bit (batch 1 and 3, recaptured for a new cache)", async () => {
    const g = golden("tiny-27b");
    const P = g.meta.prompt_ids;
    const model = await loadTensorParallelModel(g.dir, { devices: ones(2), dtype: "f32" });
    // CPU ranks share the CPU stream: the host all-reduce is a task of its recorded list.
    expect(model.comm.graphCapturable).toBe(true);
    for (const n of [1, 3]) {
      const eager = await decodeBatch(model, false, n, 6, P);
      expect(model.capturedBatches).not.toContain(n);
      const graphed = await decodeBatch(model, true, n, 6, P);
      expect(model.capturedBatches).toContain(n);
      // Step 0 runs eagerly (warm-up), step 1 captures and replays, later steps replay: a replay
      // returns a view of the shared logits buffer, an eager step a tensor of its own.
      expect(graphed.views).toEqual([false, true, true, true, true, true]);
      expect(eager.views.every((v) => !v)).toBe(true);
      graphed.out.forEach((r, i) =>
        expect(Array.from(r), `batch ${n} step ${i}`).toEqual(Array.from(eager.out[i]!)),
      );
    }
    // A new cache of the same batch size: the old graphs recorded the old cache's addresses.
    const again = await decodeBatch(model, true, 3, 4, P);
    const eager = await decodeBatch(model, false, 3, 4, P);
    model.dispose();
    again.out.forEach((r, i) => expect(Array.from(r)).toEqual(Array.from(eager.out[i]!)));
    // Batch 3 ran eagerly once before, so the first decode step on the new cache recaptures.
    expect(again.views).toEqual([true, true, true, true]);
  });
});

describe("tiny-27b: image features under tensor parallelism", () => {
  it("N = 2: image-token rows take the features on every rank (logits as one device)", async () => {
    const dir = join(fixtures, "tiny-27b");
    const single = await loadTextModel(dir, { device: "cpu", dtype: "f32" });
    const tp = await loadTensorParallelModel(dir, { devices: ones(2), dtype: "f32" });
    const img = single.config.imageTokenIndex!;
    const ids = [2, 17, 40, img, img, img, img, 99, 3, 250];
    const feats = Array.from({ length: 4 * 48 }, (_, i) => Math.sin(i * 0.37));
    const logits = async (m: TextModel) => {
      const f = Tensor.from(feats, [4, 48], "f32", "cpu");
      const seq = m.newCache(16);
      const l = await host(m.forward(ids, seq, { allLogits: true, imageFeatures: f }));
      seq.dispose();
      f.dispose();
      return l;
    };
    const want = await logits(single);
    const got = await logits(tp);
    single.dispose();
    tp.dispose();
    expect(maxAbsDiff(got, want)).toBeLessThan(TP_TOL);
  });
});

describe("tensor-parallel layout", () => {
  it("splits heads, KV heads (or replicates them), units and the vocabulary", async () => {
    const c1 = await loadConfig(join(fixtures, "tiny-1b", "config.json"));
    const c27 = await loadConfig(join(fixtures, "tiny-27b", "config.json"));
    const l1 = tensorParallelLayout(c1, 4);
    expect(l1.ranks.map((r) => r.qHeads)).toEqual([
      [0, 1],
      [1, 2],
      [2, 3],
      [3, 4],
    ]);
    expect(l1.ranks.map((r) => r.kvHeads)).toEqual([
      [0, 1],
      [0, 1],
      [0, 1],
      [0, 1],
    ]);
    expect(l1.rankConfigs.map((c) => c.intermediateSize)).toEqual([32, 32, 32, 32]);
    const l27 = tensorParallelLayout(c27, 4);
    // GQA: q head j reads KV head j / 2, so ranks 0-1 keep KV head 0 and ranks 2-3 KV head 1.
    expect(l27.ranks.map((r) => r.kvHeads)).toEqual([
      [0, 1],
      [0, 1],
      [1, 2],
      [1, 2],
    ]);
    expect(tensorParallelLayout(c27, 2).ranks.map((r) => r.kvHeads)).toEqual([
      [0, 1],
      [1, 2],
    ]);
    const padded = tensorParallelLayout({ ...c1, vocabSize: 510 }, 4);
    expect(padded.vocabPerRank).toBe(128);
    expect(padded.ranks.map((r) => r.vocab)).toEqual([
      [0, 128],
      [128, 256],
      [256, 384],
      [384, 510],
    ]);
  });

  it("refuses splits that do not divide, naming the count", async () => {
    const c = await loadConfig(join(fixtures, "tiny-1b", "config.json"));
    expect(() => tensorParallelLayout(c, 3)).toThrow(UnsupportedError);
    expect(() => tensorParallelLayout(c, 3)).toThrow(
      /num_attention_heads 4 is not a multiple of 3/,
    );
    expect(() => tensorParallelLayout({ ...c, intermediateSize: 130 }, 4)).toThrow(
      /intermediate_size 130/,
    );
    expect(() =>
      tensorParallelLayout({ ...c, numAttentionHeads: 12, numKeyValueHeads: 3 }, 4),
    ).toThrow(/num_key_value_heads 3/);
    await expect(
      loadTensorParallelModel(join(fixtures, "tiny-27b"), { devices: ones(3) }),
    ).rejects.toThrow(UnsupportedError);
  });
});

describe("sharded loading", () => {
  afterAll(() => removeTempDirs());

  it("row and column shards equal slices of the whole tensor", async () => {
    const ckpt = await openCheckpoint(join(fixtures, "tiny-27b"));
    try {
      for (const [name, spec] of [
        ["layers.1.self_attn.o_proj", { cols: [16, 48] }],
        ["layers.1.mlp.down_proj", { cols: [24, 48] }],
        ["layers.2.mlp.up_proj", { rows: [48, 96] }],
        ["embed_tokens", { rows: [384, 512], padRows: 129 }],
      ] as const) {
        const whole = await host(await loadTensor(ckpt, name, "cpu", "f32"));
        const cols = (await loadTensor(ckpt, name, "cpu", "f32")).shape[1]!;
        // 1000-byte chunks: several reads per shard, so chunk boundaries are crossed.
        const part = await loadShard(ckpt, name, Device.cpu, "f32", spec, 1000);
        const [r0, r1] = "rows" in spec ? spec.rows : [0, whole.length / cols];
        const [c0, c1] = "cols" in spec ? spec.cols : [0, cols];
        const rowsOut = "padRows" in spec ? spec.padRows : r1 - r0;
        expect(part.shape).toEqual([rowsOut, c1 - c0]);
        const got = await host(part);
        for (let r = 0; r < rowsOut; r++)
          for (let c = c0; c < c1; c++)
            expect(got[r * (c1 - c0) + c - c0]).toBe(r0 + r < r1 ? whole[(r0 + r) * cols + c] : 0);
      }
    } finally {
      await ckpt.close();
    }
  });

  it("a padded vocabulary (510 over 4 ranks), an untied bf16 head and a sharded bf16 checkpoint", async () => {
    // tiny-1b stored in bf16 as two shards, vocabulary cut to 510 rows (4 ranks of 128, the last
    // with 126) and an untied lm_head: the one-device model on the same files is the reference.
    const src = await openCheckpoint(join(fixtures, "tiny-1b"));
    const tensors: Record<string, TensorSpec> = {};
    const bf16 = (f: Float32Array) => {
      const u = new Uint16Array(f.length);
      for (let i = 0; i < f.length; i++) u[i] = f32ToBf16(f[i]!);
      return new Uint8Array(u.buffer);
    };
    for (const [key, { file, info }] of src.tensors) {
      let v = new Float32Array((await file.read(key)).slice().buffer);
      let shape = info.shape;
      if (key === "model.embed_tokens.weight") {
        v = v.slice(0, 510 * shape[1]!);
        shape = [510, shape[1]!];
        // An untied head: the embedding's rows reversed and halved (distinct from the embedding).
        const head = new Float32Array(v.length);
        for (let r = 0; r < 510; r++)
          for (let c = 0; c < shape[1]!; c++)
            head[r * shape[1]! + c] = 0.5 * v[(509 - r) * shape[1]! + c]!;
        tensors["lm_head.weight"] = { dtype: "BF16", shape, data: bf16(head) };
      }
      tensors[key] = { dtype: "BF16", shape, data: bf16(v) };
    }
    await src.close();
    const dir = tempDir("tp");
    const keys = Object.keys(tensors);
    const half = Math.floor(keys.length / 2);
    const pick = (ks: string[]) => Object.fromEntries(ks.map((k) => [k, tensors[k]!]));
    writeSharded(dir, {
      "model-00001-of-00002.safetensors": pick(keys.slice(0, half)),
      "model-00002-of-00002.safetensors": pick(keys.slice(half)),
    });
    const cfg = JSON.parse(readFileSync(join(fixtures, "tiny-1b", "config.json"), "utf8"));
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({
        ...cfg,
        vocab_size: 510,
        tie_word_embeddings: false,
        torch_dtype: "bfloat16",
      }),
    );
    const prompt = golden("tiny-1b").meta.prompt_ids.map((id) => id % 510);
    // Float, then with quantizeHead q8_0: the untied lm_head is quantized too (from bf16), the
    // last rank's padding rows included.
    for (const quantizeHead of [undefined, "q8_0"] as const) {
      const o = { dtype: "f32", ...(quantizeHead ? { quantizeHead } : {}) } as const;
      const single = await loadTextModel(dir, { device: "cpu", ...o });
      const tp = await loadTensorParallelModel(dir, { devices: ones(4), ...o });
      expect(tp.layout.vocabPerRank).toBe(128);
      const heads = [
        single.weights.lmHead!,
        ...(tp as unknown as { ranks: { weights: TextWeights }[] }).ranks.map(
          (rk) => rk.weights.lmHead!,
        ),
      ];
      for (const t of heads) expect(t.dtypeName).toBe(quantizeHead ?? "f32");
      const want = await run(single, prompt, 8, 510);
      const got = await run(tp, prompt, 8, 510);
      single.dispose();
      tp.dispose();
      expect(maxAbsDiff(got.logits, want.logits)).toBeLessThan(TP_TOL);
      expect(maxAbsDiff(got.stepLogits, want.stepLogits)).toBeLessThan(TP_TOL);
      expect(got.ids).toEqual(want.ids);
    }
  });
});

// ---- GPU ranks ----------------------------------------------------------------------------------
const gpus = deviceCount();
if (process.env.GEMMA3_TEST_MULTI_GPU === "1" && gpus < 2)
  throw new Error(`GEMMA3_TEST_MULTI_GPU=1 but ${gpus} CUDA device(s) are visible`);

describe.skipIf(gpus < 2)("tensor parallel on CUDA ranks", () => {
  const backends: ("host" | "nccl")[] = ["host", ...(buildInfo().nccl ? (["nccl"] as const) : [])];
  const sizes = gpus >= 4 ? [2, 4] : [2];
  for (const name of ["tiny-1b", "tiny-27b"])
    for (const backend of backends)
      for (const n of sizes) {
        const devices = Array.from({ length: n }, (_, i) => `cuda:${i}`);
        it(`${name} ${backend} N = ${n}: f32 equals HF like one GPU; bf16 as close as one GPU`, async () => {
          const g = golden(name);
          const V = g.meta.vocab;
          const steps = g.meta.greedy_ids.length;
          const f32 = await loadTensorParallelModel(g.dir, {
            devices,
            dtype: "f32",
            collective: backend,
          });
          expect(f32.comm.backend).toBe(backend);
          const ours = await run(f32, g.meta.prompt_ids, steps, V);
          f32.dispose();
          expect(maxAbsDiff(ours.logits, g.logits)).toBeLessThan(HF_TOL);
          expect(ours.ids).toEqual(g.meta.greedy_ids);
          // Decode steps replayed from per-device graphs (NCCL all-reduces captured) against the
          // same model's eager steps; the host fallback of CUDA ranks cannot be captured and
          // stays eager.
          const tp = await loadTensorParallelModel(g.dir, {
            devices,
            dtype: "f32",
            collective: backend,
          });
          expect(tp.comm.graphCapturable).toBe(backend === "nccl");
          const eager = await decodeBatch(tp, false, 3, 8, g.meta.prompt_ids);
          const graphed = await decodeBatch(tp, true, 3, 8, g.meta.prompt_ids);
          const captured = tp.capturedBatches;
          const fallback = tp.graphFallback;
          tp.dispose();
          expect(fallback).toBeNull();
          expect(captured).toEqual(backend === "nccl" ? [3] : []);
          // Step 0 eager, step 1 captures (or, if NCCL's first capture fails, step 2 retries).
          expect(graphed.views.slice(2).every((v) => v)).toBe(backend === "nccl");
          const d = Math.max(...graphed.out.map((r, i) => maxAbsDiff(r, eager.out[i]!)));
          console.log(
            `${name} ${backend} N = ${n}: graph vs eager decode max |Δ| ${d.toExponential(2)}`,
          );
          expect(d).toBeLessThan(TP_TOL);

          await bf16Parity(name, devices, "cuda:0", backend);
        });
      }

  // Quantized ranks: q4_0 / q8_0 shards in the split layouts (layout.ts) give the logits of the
  // same shards kept in GGUF blocks (GEMMA3_Q4_0_LAYOUT / GEMMA3_Q8_0_LAYOUT=gguf) to a float32
  // accumulation bound (the same integer block dots summed in another order), over a prompt and
  // graph-replayed decode steps.
  for (const q of ["q4_0", "q8_0"] as const)
    it(`tiny-1b N = 2, ${q}: the split layouts equal the GGUF blocks`, async () => {
      const g = golden("tiny-1b");
      const V = g.meta.vocab;
      const vars = ["GEMMA3_Q4_0_LAYOUT", "GEMMA3_Q8_0_LAYOUT"] as const;
      const load = async (layout: string | undefined) => {
        const old = vars.map((v) => process.env[v]);
        for (const v of vars) if (layout) process.env[v] = layout;
        try {
          return await loadTensorParallelModel(g.dir, {
            devices: ["cuda:0", "cuda:1"],
            dtype: "f32",
            quantize: q,
          });
        } finally {
          vars.forEach((v, i) =>
            old[i] === undefined ? delete process.env[v] : (process.env[v] = old[i]),
          );
        }
      };
      const dtypes = (m: TensorParallelTextModel) =>
        new Set(
          (m as unknown as { ranks: { weights: TextWeights }[] }).ranks.flatMap((rk) =>
            Object.values(rk.weights.layers[0]!).map((t: Tensor) => t.dtypeName),
          ),
        );
      const split = await load(undefined);
      const blocks = await load("gguf");
      expect(dtypes(split).has(`${q}s`)).toBe(true);
      expect(dtypes(blocks).has(`${q}s`)).toBe(false);
      const a = await run(split, g.meta.prompt_ids, 6, V);
      const b = await run(blocks, g.meta.prompt_ids, 6, V);
      split.dispose();
      blocks.dispose();
      expect(maxAbsDiff(a.logits, b.logits)).toBeLessThan(1e-3);
      expect(maxAbsDiff(a.stepLogits, b.stepLogits)).toBeLessThan(1e-3);
    });
});
