// Image soft tokens in the text model (HF Gemma3Model.forward): the embedding rows at positions
// holding image_token_index are replaced by projected image features (not scaled by √hidden:
// masked_scatter runs after the scaled embedding), and each run of consecutive image tokens is one
// bidirectional block (HF token_type_ids → image_group_ids; or-ed with the causal mask).
import { ShapeError, type Tensor } from "@gemma3/native";
import type { DeviceIds } from "./device_ids.js";
import type { KVSequence, Span } from "@gemma3/kv-cache";
import type { Gemma3Config } from "./config.js";

/**
 * The bidirectional spans of a prompt: each maximal run of `imageTokenId` is one image block.
 * @param ids token ids of positions [start, start + ids.length)
 * @param start absolute position of ids[0] in its sequence
 * @returns half-open absolute spans, in order
 */
export function imageTokenSpans(ids: readonly number[], imageTokenId: number, start = 0): Span[] {
  const spans: Span[] = [];
  for (let i = 0; i < ids.length;) {
    if (ids[i] !== imageTokenId) {
      i++;
      continue;
    }
    let j = i;
    while (j < ids.length && ids[j] === imageTokenId) j++;
    spans.push({ start: start + i, end: start + j });
    i = j;
  }
  return spans;
}

/** One sequence's share of a step, as the model receives it. */
export interface ImageStep {
  ids: readonly number[];
  /**
   * Feature rows for this step's image tokens, in order: [k, hidden] or [images, tokens, hidden]
   * (k = number of image-token ids in `ids`), in the model's dtype on its device.
   */
  imageFeatures?: Tensor;
}

/** What the forward pass needs to merge image features: embedding ids and row copies. */
export interface ImageMerge {
  /** ids for the embedding gather (an out-of-vocabulary image token gathers row 0, as HF does) */
  embedIds: number[];
  /** features [k, hidden] → rows of the step's hidden states (global row indices) */
  copies: { features: Tensor; rows: number[] }[];
}

/**
 * Validates the steps' ids and features and plans the merge.
 * @throws RangeError for an id outside the vocabulary (other than the image token with features)
 * @throws ShapeError when features do not match the image tokens (count, width, dtype, device)
 */
export function planImageMerge(
  steps: readonly ImageStep[],
  cfg: Gemma3Config,
  dtype: string,
  device: string,
): ImageMerge {
  const vocab = cfg.vocabSize;
  const image = cfg.imageTokenIndex;
  const embedIds: number[] = [];
  const copies: ImageMerge["copies"] = [];
  let row = 0;
  for (const { ids, imageFeatures: f } of steps) {
    if (f && image === null)
      throw new ShapeError(
        "forward: image features given, but the config has no image_token_index",
        "E_SHAPE",
      );
    const rows: number[] = [];
    for (const id of ids) {
      if (f && id === image) {
        rows.push(row);
        embedIds.push(id < vocab ? id : 0); // HF: an out-of-vocabulary image id embeds as PAD (0)
      } else if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new RangeError(
          `forward: token id ${id} outside [0, ${vocab})` +
            (id === image ? " (an image token needs image features)" : ""),
        );
      } else {
        embedIds.push(id);
      }
      row++;
    }
    if (!f) continue;
    const width = f.shape[f.shape.length - 1];
    const count = f.numel / (width || 1);
    if (width !== cfg.hiddenSize || count !== rows.length)
      throw new ShapeError(
        `forward: image features [${f.shape.join(", ")}] must be ${rows.length} rows of ` +
          `${cfg.hiddenSize} (one per image token ${image} in the step's ids)`,
        "E_SHAPE",
      );
    if (f.dtypeName !== dtype || f.device.toString() !== device)
      throw new ShapeError(
        `forward: image features are ${f.dtypeName} on ${f.device}, the model runs ${dtype} on ${device}`,
        "E_DTYPE",
      );
    if (rows.length > 0) copies.push({ features: f.view([rows.length, width]), rows });
  }
  return { embedIds, copies };
}

/**
 * The cache plan's requests for a step (shared by the one-device and tensor-parallel models):
 * checks that every sequence has new tokens and belongs to `cache`, and gives each step that
 * brings image features without spans one bidirectional span per run of image tokens. The ids go
 * with the request: a cache with a prefix index registers the full pages they fill.
 */
export function stepRequests(
  steps: readonly {
    seq: KVSequence;
    ids: readonly number[];
    idsFrom?: DeviceIds;
    spans?: readonly Span[];
    imageFeatures?: Tensor;
  }[],
  cache: unknown,
  cfg: Gemma3Config,
): {
  seq: number;
  count: number;
  ids?: readonly number[];
  idsLater?: boolean;
  spans: readonly Span[] | undefined;
}[] {
  for (const { seq, ids, idsFrom, imageFeatures } of steps) {
    if (seq.cache !== cache) throw new RangeError("forwardBatch: sequences of different caches");
    if (idsFrom) {
      if (ids.length !== 0 || imageFeatures)
        throw new RangeError("forward: a step with idsFrom brings no host ids and no images");
    } else if (ids.length === 0) throw new RangeError("forward: no tokens");
  }
  return steps.map(({ seq, ids, idsFrom, spans, imageFeatures }) =>
    idsFrom
      ? // The id is on the device: the cache gets it later (provideIds).
        { seq: seq.id, count: 1, idsLater: true, spans }
      : {
          seq: seq.id,
          count: ids.length,
          ids,
          spans:
            spans ??
            (imageFeatures ? imageTokenSpans(ids, cfg.imageTokenIndex!, seq.length) : undefined),
        },
  );
}
