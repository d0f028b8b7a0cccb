// Config parsing against the hub's published config.json files (fixtures/configs, copied from
// /work/shared/gemma3/configs), the transformers-5 serialization, and broken files.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  ConfigError,
  inspectConfig,
  loadConfig,
  parseConfig,
  type Gemma3Config,
} from "../src/config.js";

const FIXTURES = fileURLToPath(new URL("./fixtures/configs", import.meta.url));
const raw = (size: string): Record<string, unknown> =>
  JSON.parse(readFileSync(join(FIXTURES, `gemma-3-${size}-it.config.json`), "utf8"));
const load = (size: string): Gemma3Config =>
  parseConfig(raw(size), `gemma-3-${size}-it/config.json`);

/** Global layer indices: (i + 1) % 6 == 0. */
const globals = (cfg: Gemma3Config) => cfg.layerTypes.flatMap((t, i) => (t === "full" ? [i] : []));

/** Expects a ConfigError whose message names the source and the field. */
function expectConfigError(json: unknown, field: string, source = "bad/config.json"): ConfigError {
  let err: unknown;
  try {
    parseConfig(json, source);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  const ce = err as ConfigError;
  expect(ce.field).toBe(field);
  expect(ce.source).toBe(source);
  expect(ce.message).toContain(source);
  expect(ce.message).toContain(field);
  return ce;
}

describe("published configs", () => {
  it("1B: flat gemma3_text, 26 layers, window 512, no RoPE scaling, MQA", () => {
    const c = load("1b");
    expect(c.modelType).toBe("gemma3_text");
    expect(c.architecture).toBe("Gemma3ForCausalLM");
    expect(c.numHiddenLayers).toBe(26);
    expect(c.layerTypes).toHaveLength(26);
    expect(globals(c)).toEqual([5, 11, 17, 23]);
    expect(c.vocabSize).toBe(262144);
    expect(c.hiddenSize).toBe(1152);
    expect(c.numAttentionHeads).toBe(4);
    expect(c.numKeyValueHeads).toBe(1);
    expect(c.headDim).toBe(256);
    expect(c.slidingWindow).toBe(512);
    expect(c.maxPositionEmbeddings).toBe(32768);
    expect(c.rope).toEqual({ local: { base: 10000, scale: 1 }, global: { base: 1e6, scale: 1 } });
    expect(c.eosTokenIds).toEqual([1, 106]);
    expect(c.bosTokenId).toBe(2);
    expect(c.padTokenId).toBe(0);
    expect(c.tieWordEmbeddings).toBe(true);
    expect(c.torchDtype).toBe("bfloat16");
    expect(c.vision).toBeNull();
    expect(c.imageTokenIndex).toBeNull();
  });

  it("4B: sparse text_config takes Gemma3TextConfig defaults (heads 8 / kv 4, vocab 262208)", () => {
    const c = load("4b");
    expect(c.modelType).toBe("gemma3");
    expect(c.architecture).toBe("Gemma3ForConditionalGeneration");
    expect(c.numHiddenLayers).toBe(34);
    expect(c.numAttentionHeads).toBe(8);
    expect(c.numKeyValueHeads).toBe(4);
    expect(c.headDim).toBe(256);
    expect(c.vocabSize).toBe(262208);
    expect(c.queryPreAttnScalar).toBe(256);
    expect(c.rmsNormEps).toBe(1e-6);
    expect(c.maxPositionEmbeddings).toBe(131072);
    expect(c.slidingWindow).toBe(1024);
    expect(globals(c)).toEqual([5, 11, 17, 23, 29]);
    expect(c.rope).toEqual({ local: { base: 10000, scale: 1 }, global: { base: 1e6, scale: 8 } });
    // Wrapper-level ids win over text_config defaults (eos 1).
    expect(c.eosTokenIds).toEqual([1, 106]);
    expect(c.bosTokenId).toBe(2);
    expect(c.mmTokensPerImage).toBe(256);
    expect(c.boiTokenId).toBe(255999);
    expect(c.eoiTokenId).toBe(256000);
    expect(c.imageTokenIndex).toBe(262144);
    expect(c.vision).toMatchObject({
      model_type: "siglip_vision_model",
      hidden_size: 1152,
      image_size: 896,
      patch_size: 14,
      num_hidden_layers: 27,
      num_attention_heads: 16,
      intermediate_size: 4304,
      layer_norm_eps: 1e-6, // not in the file: SiglipVisionConfig default
      num_channels: 3, // default
      hidden_act: "gelu_pytorch_tanh", // default
      vision_use_head: false, // extra key kept
    });
  });

  it("12B: 48 layers, heads 16 / kv 8", () => {
    const c = load("12b");
    expect(c.numHiddenLayers).toBe(48);
    expect(c.numAttentionHeads).toBe(16);
    expect(c.numKeyValueHeads).toBe(8);
    expect(c.hiddenSize).toBe(3840);
    expect(globals(c)).toEqual([5, 11, 17, 23, 29, 35, 41, 47]);
  });

  it("27B: 62 layers, head_dim 128 but query_pre_attn_scalar 168, global RoPE ×8", () => {
    const c = load("27b");
    expect(c.numHiddenLayers).toBe(62);
    expect(c.layerTypes).toHaveLength(62);
    expect(c.headDim).toBe(128);
    expect(c.queryPreAttnScalar).toBe(168);
    expect(c.numAttentionHeads).toBe(32);
    expect(c.numKeyValueHeads).toBe(16);
    expect(c.rope.global).toEqual({ base: 1e6, scale: 8 });
    expect(c.rope.local).toEqual({ base: 1e4, scale: 1 });
    expect(globals(c)).toEqual([5, 11, 17, 23, 29, 35, 41, 47, 53, 59]);
  });

  it("loadConfig reads a file and names it in errors", async () => {
    const path = join(FIXTURES, "gemma-3-27b-it.config.json");
    expect(await loadConfig(path)).toEqual(load("27b"));
    await expect(loadConfig(join(FIXTURES, "nope.json"))).rejects.toThrow(
      /nope\.json: cannot read/,
    );
  });
});

describe("inspectConfig", () => {
  it("layer patterns", () => {
    expect(inspectConfig(load("1b")).layerPattern).toBe("LLLLLG×4 + LL");
    expect(inspectConfig(load("4b")).layerPattern).toBe("LLLLLG×5 + LLLL");
    expect(inspectConfig(load("12b")).layerPattern).toBe("LLLLLG×8");
    expect(inspectConfig(load("27b")).layerPattern).toBe("LLLLLG×10 + LL");
    const s = inspectConfig(load("27b"));
    expect([s.numGlobal, s.numLocal]).toEqual([10, 52]);
  });

  it("KV bytes per token, by hand", () => {
    // 1B: Hkv 1, d 256, bf16: K+V of one layer-position = 2·1·256·2 = 1024 B.
    const k1 = inspectConfig(load("1b")).kvBytesPerToken;
    expect(k1.full).toBe(26 * 1024); // 26 624
    expect(k1.globalOnly).toBe(4 * 1024); // layers 5, 11, 17, 23
    expect(k1.localFixed).toBe(22 * 512 * 1024); // 22 sliding layers × 512-token rings
    // 27B: Hkv 16, d 128: 2·16·128·2 = 8192 B per layer-position.
    const k27 = inspectConfig(load("27b")).kvBytesPerToken;
    expect(k27.full).toBe(62 * 8192); // 507 904
    expect(k27.globalOnly).toBe(10 * 8192); // 81 920
    expect(k27.localFixed).toBe(52 * 1024 * 8192); // 436 207 616
  });

  it("parameter counts match published totals", () => {
    // 1B by hand: embed 262144·1152 = 301 989 888; per layer q 1024·1152 + k,v 2·256·1152 +
    // o 1152·1024 = 2 949 120, mlp 3·1152·6912 = 23 887 872, norms 4·1152 + 2·256 = 5 120;
    // 26 layers + final norm 1152 → 999 885 952. keras-hub gemma3_presets.py lists
    // "gemma3_1b": params 999885952 — the same number.
    const p1 = inspectConfig(load("1b")).params;
    expect(p1.embedding).toBe(301_989_888);
    expect(p1.perLayer).toEqual({ attention: 2_949_120, mlp: 23_887_872, norms: 5_120 });
    expect(p1.lmHead).toBe(0);
    expect(p1.total).toBe(999_885_952);
    expect(p1.totalWithoutEmbedding).toBe(999_885_952 - 301_989_888);

    // keras-hub lists "gemma3_4b_text": 3 880 099 328 and "gemma3_12b_text": 11 765 788 416,
    // counted with a 262144-row embedding; HF's checkpoints carry 262208 rows (64 more).
    const c4 = load("4b");
    expect(inspectConfig({ ...c4, vocabSize: 262144 }).params.total).toBe(3_880_099_328);
    expect(inspectConfig(c4).params.total).toBe(3_880_099_328 + 64 * 2560);
    const c12 = load("12b");
    expect(inspectConfig({ ...c12, vocabSize: 262144 }).params.total).toBe(11_765_788_416);
    expect(inspectConfig(c4).params.total).toBeCloseTo(3.88e9, -7);

    // Untied head counts a second vocab × hidden matrix.
    const untied = inspectConfig({ ...load("1b"), tieWordEmbeddings: false }).params;
    expect(untied.lmHead).toBe(301_989_888);
    expect(untied.total).toBe(999_885_952 + 301_989_888);
    expect(untied.totalWithoutEmbedding).toBe(p1.totalWithoutEmbedding);
  });

  it("non-periodic layer_types print one letter per layer", () => {
    const c = parseConfig({
      model_type: "gemma3_text",
      num_hidden_layers: 5,
      layer_types: [
        "sliding_attention",
        "full_attention",
        "full_attention",
        "sliding_attention",
        "sliding_attention",
      ],
    });
    expect(inspectConfig(c).layerPattern).toBe("LGGLL");
  });
});

/** layer_types as transformers ≥ 5 writes them for num_hidden_layers n, pattern 6. */
const layerTypes = (n: number): string[] =>
  Array.from({ length: n }, (_, i) => ((i + 1) % 6 === 0 ? "full_attention" : "sliding_attention"));

describe("transformers 5 form", () => {
  // Written by hand from transformers 5's Gemma3TextConfig: rope_theta / rope_local_base_freq /
  // rope_scaling are folded into rope_parameters keyed by layer type (convert_rope_params_to_dict,
  // standardize_rope_params adds rope_type), sliding_window_pattern becomes layer_types, and
  // torch_dtype is renamed dtype.
  it("27B multimodal equals the 4.50 form", () => {
    const v5 = {
      architectures: ["Gemma3ForConditionalGeneration"],
      boi_token_index: 255999,
      eoi_token_index: 256000,
      eos_token_id: [1, 106],
      image_token_index: 262144,
      initializer_range: 0.02,
      mm_tokens_per_image: 256,
      model_type: "gemma3",
      dtype: "bfloat16",
      tie_word_embeddings: true,
      transformers_version: "5.0.0",
      text_config: {
        attention_bias: false,
        attention_dropout: 0.0,
        attn_logit_softcapping: null,
        final_logit_softcapping: null,
        head_dim: 128,
        hidden_activation: "gelu_pytorch_tanh",
        hidden_size: 5376,
        intermediate_size: 21504,
        layer_types: layerTypes(62),
        max_position_embeddings: 131072,
        model_type: "gemma3_text",
        num_attention_heads: 32,
        num_hidden_layers: 62,
        num_key_value_heads: 16,
        query_pre_attn_scalar: 168,
        rms_norm_eps: 1e-6,
        rope_parameters: {
          full_attention: { factor: 8.0, rope_theta: 1000000.0, rope_type: "linear" },
          sliding_attention: { rope_theta: 10000.0, rope_type: "default" },
        },
        sliding_window: 1024,
        use_bidirectional_attention: false,
        use_cache: true,
        vocab_size: 262208,
      },
      vision_config: {
        attention_dropout: 0.0,
        hidden_act: "gelu_pytorch_tanh",
        hidden_size: 1152,
        image_size: 896,
        intermediate_size: 4304,
        layer_norm_eps: 1e-6,
        model_type: "siglip_vision_model",
        num_attention_heads: 16,
        num_channels: 3,
        num_hidden_layers: 27,
        patch_size: 14,
        vision_use_head: false,
      },
    };
    expect(parseConfig(v5)).toEqual(parseConfig(raw("27b")));
  });

  it("1B causal LM equals the 4.50 form", () => {
    const legacy = raw("1b");
    const {
      rope_theta: _t,
      rope_local_base_freq: _l,
      rope_scaling: _s,
      sliding_window_pattern: _p,
      torch_dtype,
      ...rest
    } = legacy;
    const v5 = {
      ...rest,
      dtype: torch_dtype,
      layer_types: layerTypes(26),
      rope_parameters: {
        full_attention: { rope_theta: 1000000.0, rope_type: "default" },
        sliding_attention: { rope_theta: 10000.0, rope_type: "default" },
      },
    };
    expect(parseConfig(v5)).toEqual(parseConfig(legacy));
  });

  it("a legacy rope_scaling next to rope_parameters merges into full_attention", () => {
    const c = parseConfig({
      model_type: "gemma3_text",
      rope_parameters: { sliding_attention: { rope_type: "default" } },
      rope_scaling: { type: "linear", factor: 4 },
      rope_theta: 5e5,
    });
    expect(c.rope).toEqual({ local: { base: 1e4, scale: 1 }, global: { base: 5e5, scale: 4 } });
  });

  it("per-type rope_theta wins over top-level rope_theta (setdefault)", () => {
    const c = parseConfig({
      model_type: "gemma3_text",
      rope_theta: 123,
      rope_parameters: { full_attention: { rope_type: "default", rope_theta: 7e5 } },
    });
    expect(c.rope.global).toEqual({ base: 7e5, scale: 1 });
  });

  it("layer_types win over sliding_window_pattern", () => {
    const c = parseConfig({
      model_type: "gemma3_text",
      num_hidden_layers: 3,
      sliding_window_pattern: 2,
      layer_types: ["full_attention", "sliding_attention", "sliding_attention"],
    });
    expect(c.layerTypes).toEqual(["full", "sliding", "sliding"]);
  });
});

describe("defaults", () => {
  it("an empty gemma3_text config is Gemma3TextConfig()", () => {
    const c = parseConfig({ model_type: "gemma3_text" });
    expect(c).toMatchObject({
      vocabSize: 262208,
      hiddenSize: 2304,
      intermediateSize: 9216,
      numHiddenLayers: 26,
      numAttentionHeads: 8,
      numKeyValueHeads: 4,
      headDim: 256,
      maxPositionEmbeddings: 131072,
      rmsNormEps: 1e-6,
      queryPreAttnScalar: 256,
      slidingWindow: 4096,
      tieWordEmbeddings: true,
      bosTokenId: 2,
      eosTokenIds: [1],
      padTokenId: 0,
      torchDtype: null,
      rope: { local: { base: 1e4, scale: 1 }, global: { base: 1e6, scale: 1 } },
    });
  });

  it("a gemma3 config without vision_config gets SiglipVisionConfig() (HF's defaults)", () => {
    // HF's bare Gemma3Config() pairs a 224/16 SigLIP-base tower (14×14 patches) with 256 tokens
    // per image: its projector's pooling kernel would be 14 // 16 = 0. Refused as inconsistent.
    expectConfigError({ model_type: "gemma3" }, "mm_tokens_per_image", "config.json");
    const c = parseConfig({ model_type: "gemma3", mm_tokens_per_image: 49 });
    expect(c.vision).toMatchObject({
      hidden_size: 768,
      image_size: 224,
      patch_size: 16,
      num_hidden_layers: 12,
    });
    expect(c.mmTokensPerImage).toBe(49);
  });
});

describe("bad configs throw ConfigError naming the file and field", () => {
  const ok = () => raw("1b");
  const mm = () => raw("4b");
  const withText = (patch: Record<string, unknown>) => {
    const c = mm();
    c.text_config = { ...(c.text_config as object), ...patch };
    return c;
  };

  it("model_type", () => {
    expectConfigError({ ...ok(), model_type: "llama" }, "model_type");
    const { model_type: _m, ...none } = ok();
    expect(expectConfigError(none, "model_type").message).toMatch(/missing/);
    expectConfigError(withText({ model_type: "gemma2" }), "text_config.model_type");
    expectConfigError(42, "");
  });

  it("unsupported features", () => {
    expectConfigError({ ...ok(), hidden_activation: "gelu" }, "hidden_activation");
    expectConfigError({ ...ok(), attn_logit_softcapping: 50.0 }, "attn_logit_softcapping");
    expectConfigError({ ...ok(), final_logit_softcapping: 30.0 }, "final_logit_softcapping");
    expectConfigError({ ...ok(), attention_bias: true }, "attention_bias");
    expectConfigError(
      { ...ok(), use_bidirectional_attention: true },
      "use_bidirectional_attention",
    );
    expectConfigError(
      withText({ final_logit_softcapping: 30.0 }),
      "text_config.final_logit_softcapping",
    );
  });

  it("RoPE", () => {
    expectConfigError(
      { ...ok(), rope_scaling: { rope_type: "yarn", factor: 8 } },
      "rope_scaling.rope_type",
    );
    expectConfigError(
      { ...ok(), rope_scaling: { type: "dynamic", factor: 8 } },
      "rope_scaling.type",
    );
    expectConfigError({ ...ok(), rope_scaling: { rope_type: "linear" } }, "rope_scaling.factor");
    expectConfigError(
      { ...ok(), rope_scaling: { rope_type: "linear", factor: 0 } },
      "rope_scaling.factor",
    );
    expectConfigError({ ...ok(), rope_scaling: "linear" }, "rope_scaling");
    expectConfigError(
      { ...ok(), rope_parameters: { full_attention: { rope_type: "llama3", factor: 8 } } },
      "rope_parameters.full_attention.rope_type",
    );
    expectConfigError(
      withText({
        rope_parameters: { sliding_attention: { rope_type: "default", rope_theta: -1 } },
      }),
      "text_config.rope_parameters.sliding_attention.rope_theta",
    );
    expectConfigError(
      { ...ok(), rope_parameters: { rope_type: "default", rope_theta: 1e6 } },
      "rope_parameters.rope_type",
    );
    expectConfigError(
      { ...ok(), rope_parameters: { sliding_attention: 3 } },
      "rope_parameters.sliding_attention",
    );
    expectConfigError({ ...ok(), rope_theta: 0 }, "rope_theta");
  });

  it("layer types", () => {
    expectConfigError({ ...ok(), layer_types: layerTypes(25) }, "layer_types");
    const lt = layerTypes(26);
    lt[3] = "chunked_attention";
    expectConfigError({ ...ok(), layer_types: lt }, "layer_types[3]");
    expectConfigError({ ...ok(), layer_types: "full_attention" }, "layer_types");
    expectConfigError({ ...ok(), sliding_window_pattern: 0 }, "sliding_window_pattern");
    expectConfigError({ ...ok(), sliding_window_pattern: -6 }, "sliding_window_pattern");
  });

  it("sizes and heads", () => {
    const e = expectConfigError(
      { ...ok(), num_attention_heads: 4, num_key_value_heads: 3 },
      "num_key_value_heads",
    );
    expect(e.message).toMatch(/does not divide num_attention_heads 4/);
    expectConfigError(withText({ num_key_value_heads: 3 }), "text_config.num_key_value_heads");
    expectConfigError({ ...ok(), hidden_size: 0 }, "hidden_size");
    expectConfigError({ ...ok(), intermediate_size: -1 }, "intermediate_size");
    expectConfigError({ ...ok(), vocab_size: "262144" }, "vocab_size");
    expectConfigError({ ...ok(), head_dim: 1.5 }, "head_dim");
    expectConfigError({ ...ok(), num_hidden_layers: null }, "num_hidden_layers");
    expectConfigError({ ...ok(), sliding_window: 0 }, "sliding_window");
    expectConfigError({ ...ok(), rms_norm_eps: 0 }, "rms_norm_eps");
    expectConfigError({ ...ok(), query_pre_attn_scalar: -168 }, "query_pre_attn_scalar");
    expectConfigError({ ...ok(), tie_word_embeddings: "yes" }, "tie_word_embeddings");
    expectConfigError({ ...ok(), eos_token_id: [1, "106"] }, "eos_token_id");
  });

  it("multimodal", () => {
    expectConfigError({ ...mm(), text_config: [] }, "text_config");
    expectConfigError({ ...mm(), mm_tokens_per_image: 200 }, "mm_tokens_per_image");
    // 64×64 patch grid: 3×3 tokens would need a kernel of 64/3.
    expectConfigError({ ...mm(), mm_tokens_per_image: 9 }, "mm_tokens_per_image");
    const badVision = (patch: Record<string, unknown>) => {
      const c = mm();
      c.vision_config = { ...(c.vision_config as object), ...patch };
      return c;
    };
    expectConfigError(badVision({ patch_size: 13 }), "vision_config.patch_size");
    expectConfigError(badVision({ num_attention_heads: 7 }), "vision_config.num_attention_heads");
    expectConfigError(badVision({ hidden_act: "relu" }), "vision_config.hidden_act");
    expectConfigError(badVision({ model_type: "clip_vision_model" }), "vision_config.model_type");
    expectConfigError(badVision({ hidden_size: 0 }), "vision_config.hidden_size");
    expectConfigError({ ...mm(), image_token_index: null }, "image_token_index");
  });
});
