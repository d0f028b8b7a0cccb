// K-quants end to end on a model: gemma3 GGUFs in llama-quantize's Q4_K_M mix (Q4_K, with Q6_K for
// the tied token_embd and for attn_v / ffn_down where llama.cpp's use_more_bits says so) and pure
// Q5_K / Q6_K files load as native q4_k / q5_k / q6_k weights; their logits equal those of the
// float model with every weight replaced by dequant(quant(w)); quantize-on-load q4_k writes the
// same blocks; and mean KL / top-1 agreement against the float model are reported (and bounded).
//
// The model is random and 256 wide: a K-quant row must be whole 256-blocks, and the tiny HF
// fixtures (48-128 wide) have no such row (llama-quantize would fall back to Q5_0 / Q8_0 for every
// tensor of them). It keeps tiny-1b's structure otherwise (GQA 4:1, 5 sliding : 1 global, window 16).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { GGMLQuantizationType, gguf as hfGGUF } from "@huggingface/gguf";
import { Tensor, ops, type DTypeName } from "@gemma3/native";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StoredLayerWeight } from "../src/block.js";
import { GGUFFile, type GGMLTypeName } from "../src/gguf.js";
import { ggufTensorName } from "../src/gguf_load.js";
import { loadTextModel } from "../src/load.js";
import { compareLogits, dequantizeBlocks, type LogitComparison } from "../src/quantize.js";
import type { Gemma3TextModel } from "../src/text_model.js";
import { promptLogits } from "./golden.js";
import { q4KMTypeOf, useMoreBits, writeGemma3GGUF } from "./gguf_writer.js";
import {
  removeTempDirs,
  tempDir,
  writeSafetensors,
  type TensorSpec,
} from "./safetensors_writer.js";

afterAll(removeTempDirs);

const LAYERS = 8; // use_more_bits(i, 8): layers 0, 3, 6, 7
const HIDDEN = 256;
const config = {
  architectures: ["Gemma3ForCausalLM"],
  model_type: "gemma3_text",
  vocab_size: 512,
  hidden_size: HIDDEN,
  intermediate_size: 512,
  num_hidden_layers: LAYERS,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 64,
  query_pre_attn_scalar: 64,
  sliding_window: 16,
  sliding_window_pattern: 6,
  rope_theta: 1000000,
  rope_local_base_freq: 10000,
  rope_scaling: null,
  max_position_embeddings: 1024,
  rms_norm_eps: 1e-6,
  eos_token_id: [1, 106],
  torch_dtype: "float32",
};

/** Seeded N(0, std²) float32 values (LCG + Box–Muller). */
function gaussian(n: number, seed: number, std: number): Float32Array {
  let s = seed >>> 0;
  const u = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 2 ** 32;
  };
  return Float32Array.from(
    { length: n },
    () => std * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()),
  );
}

/**
 * config.json + model.safetensors (F32, HF names). Linear weights N(0, 1/in) keep activations O(1);
 * embeddings N(0, 0.1²) give logits a spread of a few units; norm weights are multiples of 2^-10,
 * so GGUF's stored 1 + w gives w back exactly.
 */
function writeRandomModel(dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2));
  const tensors: Record<string, TensorSpec> = {};
  let seed = 1;
  const put = (name: string, shape: number[], values: Float32Array) => {
    tensors[name] = { dtype: "F32", shape, data: new Uint8Array(values.buffer) };
  };
  const linear = (name: string, out: number, inp: number) =>
    put(name, [out, inp], gaussian(out * inp, seed++, 1 / Math.sqrt(inp)));
  const norm = (name: string, n: number) =>
    put(
      name,
      [n],
      Float32Array.from(gaussian(n, seed++, 0.1), (v) => Math.round(v * 1024) / 1024),
    );
  const c = config;
  const q = c.num_attention_heads * c.head_dim;
  const kv = c.num_key_value_heads * c.head_dim;
  put(
    "model.embed_tokens.weight",
    [c.vocab_size, HIDDEN],
    gaussian(c.vocab_size * HIDDEN, seed++, 0.1),
  );
  for (let i = 0; i < LAYERS; i++) {
    const p = `model.layers.${i}.`;
    norm(p + "input_layernorm.weight", HIDDEN);
    linear(p + "self_attn.q_proj.weight", q, HIDDEN);
    linear(p + "self_attn.k_proj.weight", kv, HIDDEN);
    linear(p + "self_attn.v_proj.weight", kv, HIDDEN);
    linear(p + "self_attn.o_proj.weight", HIDDEN, q);
    norm(p + "self_attn.q_norm.weight", c.head_dim);
    norm(p + "self_attn.k_norm.weight", c.head_dim);
    norm(p + "post_attention_layernorm.weight", HIDDEN);
    norm(p + "pre_feedforward_layernorm.weight", HIDDEN);
    linear(p + "mlp.gate_proj.weight", c.intermediate_size, HIDDEN);
    linear(p + "mlp.up_proj.weight", c.intermediate_size, HIDDEN);
    linear(p + "mlp.down_proj.weight", HIDDEN, c.intermediate_size);
    norm(p + "post_feedforward_layernorm.weight", HIDDEN);
  }
  norm("model.norm.weight", HIDDEN);
  writeSafetensors(join(dir, "model.safetensors"), tensors);
}

/** <bos> + 63 seeded ids: 64 positions, past the sliding window. */
const ids = (() => {
  let s = 7;
  const out = [2];
  while (out.length < 64) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(3 + (s % 500));
  }
  return out;
})();

/** Logits [T, vocab] of `ids`, teacher-forced. */
const logitsOf = (model: Gemma3TextModel) => promptLogits(model, ids);
async function logitsAt(path: string, opts: Parameters<typeof loadTextModel>[1] = {}) {
  const m = await loadTextModel(path, { device: "cpu", dtype: "f32", ...opts });
  try {
    return await logitsOf(m);
  } finally {
    m.dispose();
  }
}

const LINEAR: StoredLayerWeight[] = [
  "qProj",
  "kProj",
  "vProj",
  "oProj",
  "gateProj",
  "upProj",
  "downProj",
];
const CANONICAL: Record<string, string> = {
  qProj: "self_attn.q_proj",
  kProj: "self_attn.k_proj",
  vProj: "self_attn.v_proj",
  oProj: "self_attn.o_proj",
  gateProj: "mlp.gate_proj",
  upProj: "mlp.up_proj",
  downProj: "mlp.down_proj",
};

/** Replaces `t` (f32) by dequant(quant(t)) in the format `type`, in place. */
function fakeQuant(t: Tensor, type: "q4_k" | "q5_k" | "q6_k" | "q8_0"): void {
  const { data } = ops.quantize(t, type);
  ops.dequantize(data, "f32", { out: t });
  data.dispose();
}

const table: string[] = [];
afterAll(() => {
  if (table.length)
    console.log(
      [
        "random 256-wide gemma3 (8 layers, f32 on cpu, 64 positions) vs its f32 weights",
        "weights                          | bits/w (linear) | mean KL    | max KL     | top-1",
        "---------------------------------|-----------------|------------|------------|-------",
        ...table,
      ].join("\n"),
    );
});
function row(what: string, bits: string, c: LogitComparison): void {
  table.push(
    `${what.padEnd(32)} | ${bits.padEnd(15)} | ${c.meanKL.toExponential(2).padEnd(10)} | ` +
      `${c.maxKL.toExponential(2).padEnd(10)} | ${c.top1Agreement.toFixed(3)}`,
  );
}

describe("K-quant GGUFs of a 256-wide random gemma3 (CPU)", () => {
  let dir: string;
  let ref: Float32Array;
  let q4km: string;
  const vocab = config.vocab_size;

  beforeAll(async () => {
    dir = join(tempDir("kquant"), "model");
    writeRandomModel(dir);
    ref = await logitsAt(dir);
    q4km = await writeGemma3GGUF(dir, "Q4_K", join(dir, "..", "q4_k_m.gguf"), {
      typeOf: q4KMTypeOf(LAYERS),
    });
  });

  it("use_more_bits picks llama.cpp's layers (first and last eighth, every third between)", () => {
    const pick = (n: number) =>
      Array.from({ length: n }, (_, i) => i).filter((i) => useMoreBits(i, n));
    expect(pick(8)).toEqual([0, 3, 6, 7]);
    // Gemma 3 4B (34 layers): n/8 = 4, 7n/8 = 29.
    expect(pick(34)).toEqual([0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 29, 30, 31, 32, 33]);
  });

  it("Q4_K_M file: the recipe's types, read back the same by @huggingface/gguf; loaded as q4_k / q6_k", async () => {
    const expected = (canonical: string): GGMLTypeName => {
      if (canonical === "embed_tokens") return "Q6_K";
      const m = /^layers\.(\d+)\.(.+)$/.exec(canonical);
      if (m && (m[2] === "self_attn.v_proj" || m[2] === "mlp.down_proj"))
        return useMoreBits(Number(m[1]), LAYERS) ? "Q6_K" : "Q4_K";
      return "Q4_K";
    };
    const f = await GGUFFile.open(q4km);
    const theirs = await hfGGUF(q4km, { allowLocalFile: true });
    const hfType = new Map(theirs.tensorInfos.map((t) => [t.name, t.dtype]));
    const canonicals = ["embed_tokens", "norm"];
    for (let i = 0; i < LAYERS; i++)
      for (const k of LINEAR) canonicals.push(`layers.${i}.${CANONICAL[k]}`);
    for (const c of canonicals) {
      const name = ggufTensorName(c);
      const want: GGMLTypeName = c === "norm" ? "F32" : expected(c);
      expect(f.tensors.get(name)!.type, name).toBe(want);
      expect(hfType.get(name), name).toBe(GGMLQuantizationType[want as "Q4_K"]);
    }
    await f.close();

    const m = await loadTextModel(q4km, { device: "cpu", dtype: "f32" });
    const dt = (t: Tensor): DTypeName => t.dtypeName;
    expect(dt(m.weights.embedTokens)).toBe("q6_k");
    expect(dt(m.weights.norm)).toBe("f32");
    for (let i = 0; i < LAYERS; i++) {
      const l = m.weights.layers[i]!;
      expect(dt(l.qProj)).toBe("q4_k");
      expect(dt(l.gateProj)).toBe("q4_k");
      expect(dt(l.vProj)).toBe(useMoreBits(i, LAYERS) ? "q6_k" : "q4_k");
      expect(dt(l.downProj)).toBe(useMoreBits(i, LAYERS) ? "q6_k" : "q4_k");
      expect(dt(l.inputLayernorm)).toBe("f32");
    }
    // The host decoder (norms of K-quant files, tools) agrees with the native one.
    const bytes = await m.weights.layers[0]!.vProj.bytes();
    const deq = (await ops.dequantize(m.weights.layers[0]!.vProj, "f32").toArray()) as Float32Array;
    expect(dequantizeBlocks(bytes, "q6_k")).toEqual(deq);
    m.dispose();
  });

  it("Q4_K_M logits equal the f32 model's with each weight replaced by dequant(quant(w))", async () => {
    const m = await loadTextModel(dir, { device: "cpu", dtype: "f32" });
    fakeQuant(m.weights.embedTokens, "q6_k");
    m.weights.layers.forEach((l, i) => {
      for (const k of LINEAR)
        fakeQuant(
          l[k],
          (k === "vProj" || k === "downProj") && useMoreBits(i, LAYERS) ? "q6_k" : "q4_k",
        );
    });
    const fake = await logitsOf(m);
    m.dispose();
    const real = await logitsAt(q4km);
    // Same weights as floats, same float32 kernels (the K-quant matmul decodes to the values
    // dequantize gives, then runs the f32 tiles): equal to the bit.
    expect(compareLogits(fake, real, vocab).maxAbsDiff).toBe(0);
  });

  it("quantize-on-load q4_k writes the blocks a Q4_K GGUF holds (same logits)", async () => {
    const path = await writeGemma3GGUF(dir, "Q4_K", join(dir, "..", "q4_k_lin.gguf"), {
      typeOf: (c, t) => (c === "embed_tokens" ? "F32" : t), // on load the embeddings stay f32
    });
    const fromGGUF = await logitsAt(path);
    const onLoad = await logitsAt(dir, { quantize: "q4_k" });
    expect(compareLogits(fromGGUF, onLoad, vocab).maxAbsDiff).toBe(0);
  });

  it("mean KL and top-1 vs the f32 model: Q6_K < Q5_K < Q4_K, Q4_K_M <= Q4_K, q4_k < q4_0", async () => {
    const results: Record<string, LogitComparison> = {};
    const add = (what: string, bits: string, logits: Float32Array) => {
      results[what] = compareLogits(ref, logits, vocab);
      row(what, bits, results[what]!);
    };
    add("GGUF Q4_K_M (llama.cpp mix)", "4.5 / 6.56", await logitsAt(q4km));
    for (const t of ["Q4_K", "Q5_K", "Q6_K"] as const) {
      const p = await writeGemma3GGUF(dir, t, join(dir, "..", `pure-${t}.gguf`));
      add(
        `GGUF ${t} (every 2-D tensor)`,
        { Q4_K: "4.5", Q5_K: "5.5", Q6_K: "6.5625" }[t],
        await logitsAt(p),
      );
    }
    for (const q of ["q4_k", "q4_0", "q8_0"] as const)
      add(
        `${q} (quantize on load)`,
        { q4_k: "4.5", q4_0: "4.5", q8_0: "8.5" }[q],
        await logitsAt(dir, { quantize: q }),
      );
    const kl = (k: string) => results[k]!.meanKL;
    // Sanity bounds and orderings, not targets: the measured values are in the printed table.
    expect(kl("GGUF Q6_K (every 2-D tensor)")).toBeLessThan(kl("GGUF Q5_K (every 2-D tensor)"));
    expect(kl("GGUF Q5_K (every 2-D tensor)")).toBeLessThan(kl("GGUF Q4_K (every 2-D tensor)"));
    expect(kl("GGUF Q4_K_M (llama.cpp mix)")).toBeLessThanOrEqual(
      kl("GGUF Q4_K (every 2-D tensor)"),
    );
    expect(kl("q4_k (quantize on load)")).toBeLessThan(kl("q4_0 (quantize on load)")); // same 4.5 bits
    expect(kl("GGUF Q4_K (every 2-D tensor)")).toBeLessThan(0.05);
    expect(kl("GGUF Q6_K (every 2-D tensor)")).toBeLessThan(2e-3);
    expect(results["GGUF Q4_K_M (llama.cpp mix)"]!.top1Agreement).toBeGreaterThanOrEqual(0.85);
    expect(results["GGUF Q6_K (every 2-D tensor)"]!.top1Agreement).toBeGreaterThanOrEqual(0.95);
  });
});
