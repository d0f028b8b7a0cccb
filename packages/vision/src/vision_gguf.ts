// The SigLIP tower and Gemma 3 projector from a llama.cpp mmproj GGUF, into the same VisionWeights
// the safetensors path builds (vision_weights.ts).
//
// Names (gguf-py tensor_mapping.py MODEL_TENSOR.V_*, clip-impl.h TN_*), as convert_hf_to_gguf.py's
// Gemma3VisionModel writes them from the hub's vision_tower.vision_model.* / multi_modal_projector.*:
//   embeddings.patch_embedding       → v.patch_embd          (ne [p, p, C, hidden]: torch's layout)
//   embeddings.position_embedding    → v.position_embd       (ne [hidden, patches])
//   encoder.layers.N.layer_norm1/2   → v.blk.N.ln1 / ln2
//   encoder.layers.N.self_attn.q/k/v_proj, out_proj → v.blk.N.attn_q / attn_k / attn_v / attn_out
//   encoder.layers.N.mlp.fc1 / fc2   → v.blk.N.ffn_up / ffn_down
//   post_layernorm                   → v.post_ln
//   mm_soft_emb_norm                 → mm.soft_emb_norm      (stored 1 + w: Gemma3VisionModel
//                                                             .modify_tensors adds the Gemma RMSNorm 1)
//   mm_input_projection_weight       → mm.input_projection   (renamed "_weight" → ".weight"; no
//     transpose: ne [text hidden, vision hidden] is HF's [vision, text] matrix, which clip.cpp's
//     siglip graph uses as x·W via ggml_mul_mat(ggml_transpose(W), x))
// No other transposes. Types: tensor_force_quant keeps the embeddings F32 and input_projection F16
// for every --outtype; 1-D tensors are F32; the other matrices take the outtype (F32/F16/BF16, or
// Q8_0 where rows are whole blocks, else F16). Old Gemma 3 files may have fc1/fc2 under swapped
// names: clip.cpp swaps them back when ffn_down's ne[0] is the hidden size (is_ffn_swapped), and
// so does this loader.
import { dirname } from "node:path";
import { Device, Tensor, type DTypeName } from "@gemma3/native";
import {
  GGUFError,
  GGUFFile,
  GGUF_LOADABLE_TYPES,
  WeightError,
  ggufFloats,
  ggufMmprojInfo,
  type GGUFTensorInfo,
  type Gemma3Config,
} from "@gemma3/model";
import {
  assembleVisionWeights,
  expectedVisionWeights,
  requireVision,
  type LayerNormWeights,
  type LinearWeights,
  type VisionWeights,
} from "./vision_weights.js";

/** vision.encoder.layers.N.<canonical> → v.blk.N.<gguf> */
const LAYER_NAMES: Readonly<Record<string, string>> = Object.freeze({
  layer_norm1: "ln1",
  layer_norm2: "ln2",
  "self_attn.q_proj": "attn_q",
  "self_attn.k_proj": "attn_k",
  "self_attn.v_proj": "attn_v",
  "self_attn.out_proj": "attn_out",
  "mlp.fc1": "ffn_up",
  "mlp.fc2": "ffn_down",
});
const GLOBAL_NAMES: Readonly<Record<string, string>> = Object.freeze({
  "vision.embeddings.patch_embedding.weight": "v.patch_embd.weight",
  "vision.embeddings.patch_embedding.bias": "v.patch_embd.bias",
  "vision.embeddings.position_embedding.weight": "v.position_embd.weight",
  "vision.post_layernorm.weight": "v.post_ln.weight",
  "vision.post_layernorm.bias": "v.post_ln.bias",
  "projector.mm_soft_emb_norm.weight": "mm.soft_emb_norm.weight",
  "projector.mm_input_projection_weight": "mm.input_projection.weight",
});

/** The mmproj tensor name of a canonical vision / projector weight name (vision_weights.ts). */
export function mmprojTensorName(canonical: string): string {
  const g = GLOBAL_NAMES[canonical];
  if (g) return g;
  const m = /^vision\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(canonical);
  const part = m && LAYER_NAMES[m[2]!];
  if (!part) throw new RangeError(`mmprojTensorName: no mmproj name for "${canonical}"`);
  return `v.blk.${m![1]}.${part}.${m![3]}`;
}

const same = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

function tensorFail(file: string, tensor: string, msg: string): never {
  throw new GGUFError(`${file}: tensor "${tensor}" ${msg}`, "E_TENSOR", file, tensor);
}

/**
 * Checks that an mmproj GGUF holds every tensor `cfg`'s tower and projector need, of the config's
 * shapes (ne reversed) and a loadable type, and nothing else; undoes old files' fc1/fc2 swap.
 * Fails before anything is uploaded.
 * @returns canonical name → the tensor holding it
 * @throws GGUFError E_TENSOR (missing, unexpected or mis-shaped tensor, named) or
 *   E_UNSUPPORTED_TYPE (names the tensor and its type)
 */
export function checkMmprojWeights(
  cfg: Gemma3Config,
  f: Pick<GGUFFile, "path" | "tensors">,
): Map<string, GGUFTensorInfo> {
  const file = f.path;
  const v = requireVision(cfg);
  const expected = expectedVisionWeights(cfg);
  const byGGUF = new Map(expected.map((e) => [mmprojTensorName(e.name), e]));
  for (const name of f.tensors.keys())
    if (!byGGUF.has(name)) tensorFail(file, name, "is not part of a Gemma 3 (SigLIP) mmproj");
  const out = new Map<string, GGUFTensorInfo>();
  for (const [g, { name }] of byGGUF) {
    const info = f.tensors.get(g);
    if (!info) throw new GGUFError(`${file}: missing tensor "${g}"`, "E_TENSOR", file, g);
    out.set(name, info);
  }
  // clip.cpp is_ffn_swapped (PROJECTOR_TYPE_GEMMA3 is in its list of old files): ffn_down holding
  // fc1 ([ffn, hidden] in torch order, so ne[0] = hidden) means up and down were named the other way.
  if (v.intermediate_size !== v.hidden_size)
    for (let i = 0; i < v.num_hidden_layers; i++) {
      const l = `vision.encoder.layers.${i}.mlp.`;
      const down = out.get(`${l}fc2.weight`)!;
      if (down.ne[0] !== v.hidden_size) continue;
      for (const p of ["weight", "bias"]) {
        const a = out.get(`${l}fc1.${p}`)!;
        out.set(`${l}fc1.${p}`, out.get(`${l}fc2.${p}`)!);
        out.set(`${l}fc2.${p}`, a);
      }
    }
  for (const { name, shape } of expected) {
    const info = out.get(name)!;
    if (!same(info.shape, shape))
      tensorFail(
        file,
        info.name,
        `has ne [${info.ne.join(", ")}], the mmproj's config needs [${[...shape].reverse().join(", ")}]`,
      );
    if (!GGUF_LOADABLE_TYPES.includes(info.type))
      throw new GGUFError(
        `${file}: tensor "${info.name}" has type ${info.type}, which this runtime cannot load ` +
          `(supported: ${GGUF_LOADABLE_TYPES.join(", ")})`,
        "E_UNSUPPORTED_TYPE",
        file,
        info.name,
      );
  }
  return out;
}

/**
 * Uploads the tower and projector of an open mmproj GGUF as `dtype`, the same structure and
 * values as loadVisionWeights gives for the checkpoint the file was converted from: floats are
 * decoded exactly (block types dequantized) and rounded once to `dtype`; mm.soft_emb_norm gets the
 * converter's +1 taken off again (fl(1 + (fl(1 + w) − 1)) = fl(1 + w), so f32 norms are exact).
 * @returns the weights and the owners to dispose
 */
export async function loadMmprojWeights(
  cfg: Gemma3Config,
  f: GGUFFile,
  device: Device,
  dtype: "f32" | "bf16",
): Promise<{ weights: VisionWeights; owners: Tensor[] }> {
  const infos = checkMmprojWeights(cfg, f);
  const v = requireVision(cfg);
  const owners: Tensor[] = [];
  const host = async (name: string) => {
    const info = infos.get(name)!;
    return { values: ggufFloats(await f.read(info.name), info.type), info };
  };
  const upload = (values: Float32Array, shape: number[], as: DTypeName = dtype) => {
    const t = Tensor.from(values, shape, as, device);
    owners.push(t);
    return t;
  };
  const load = async (name: string) => {
    const { values, info } = await host(name);
    return upload(values, info.shape);
  };
  try {
    const lin = async (p: string): Promise<LinearWeights & LayerNormWeights> => ({
      w: await load(`${p}.weight`),
      b: await load(`${p}.bias`),
    });
    // [q; k; v] rows of one Linear, as vision_weights.ts stacks them (built on the host here).
    const stacked = async (ps: string[]): Promise<LinearWeights> => {
      const ws = await Promise.all(ps.map((p) => host(`${p}.weight`)));
      const bs = await Promise.all(ps.map((p) => host(`${p}.bias`)));
      const cat = (xs: { values: Float32Array }[]) => {
        const out = new Float32Array(xs.reduce((n, x) => n + x.values.length, 0));
        let at = 0;
        for (const x of xs) {
          out.set(x.values, at);
          at += x.values.length;
        }
        return out;
      };
      const rows = ws.reduce((n, x) => n + x.info.shape[0]!, 0);
      return {
        w: upload(cat(ws), [rows, ws[0]!.info.shape[1]!]),
        b: upload(cat(bs), [rows]),
      };
    };
    const weights = await assembleVisionWeights(v, {
      tensor: (name) => load(name),
      lin,
      stacked,
      softEmbNorm: async () => {
        // Stored as 1 + w (converter); the layer adds the 1 itself.
        const norm = await host("projector.mm_soft_emb_norm.weight");
        for (let i = 0; i < norm.values.length; i++) norm.values[i] = norm.values[i]! - 1;
        return upload(norm.values, norm.info.shape);
      },
      projection: async () => {
        // HF's [vision hidden, text hidden] matrix, transposed to [text, vision] like the
        // safetensors path (one rounding to dtype, after the transpose).
        const proj = await host("projector.mm_input_projection_weight");
        const [r = 0, c = 0] = proj.info.shape;
        const t = new Float32Array(r * c);
        for (let i = 0; i < r; i++)
          for (let j = 0; j < c; j++) t[j * r + i] = proj.values[i * c + j]!;
        return upload(t, [c, r]);
      },
    });
    return { weights, owners };
  } catch (e) {
    for (const x of owners) x.dispose();
    throw e;
  }
}

/**
 * The mmproj of a GGUF model source, or a WeightError saying how to give one.
 * @param textFile the text GGUF (named in the error)
 */
export function requireMmproj(textFile: string, mmproj: string | undefined): string {
  if (mmproj !== undefined) return mmproj;
  throw new WeightError(
    `${textFile}: a GGUF text model has no vision tower; pair it with its mmproj GGUF ` +
      `(llama.cpp's mmproj-*.gguf: the mmproj option / --mmproj, or the file beside it in ` +
      `${dirname(textFile)} when the model is named by its directory)`,
    "vision",
    textFile,
  );
}

/** image_mean / image_std an mmproj file carries (clip.vision.image_mean / image_std). */
export function mmprojPreprocess(f: GGUFFile): {
  imageMean?: [number, number, number];
  imageStd?: [number, number, number];
} {
  const info = ggufMmprojInfo(f);
  return {
    ...(info.imageMean ? { imageMean: info.imageMean } : {}),
    ...(info.imageStd ? { imageStd: info.imageStd } : {}),
  };
}
