// How a Gemma 3 text model splits over N tensor-parallel ranks (Megatron-LM, Shoeybi et al. 2019):
//   column-parallel q/k/v and gate/up: rank r holds the output rows of its attention heads and of
//     its slice of intermediate units;
//   row-parallel o_proj and down: rank r holds the matching input columns; its output is a partial
//     sum, all-reduced across ranks;
//   vocabulary-parallel embedding and logits: rank r holds a contiguous slice of vocabulary rows;
//   KV heads split with their q heads, or replicated when num_key_value_heads < N (each rank keeps
//     the one KV head its q heads read: GQA maps q head j to KV head j / (Hq / Hkv));
//   norms replicated.
// Pure arithmetic on the config: no addon.
import { UnsupportedError } from "@gemma3/native";
import type { Gemma3Config } from "../config.js";

/** Half-open index range [start, end). */
export type Range = readonly [start: number, end: number];

/** What rank r holds. */
export interface RankShard {
  rank: number;
  /** attention (q) heads */
  qHeads: Range;
  /** KV heads (one, replicated, when num_key_value_heads < N) */
  kvHeads: Range;
  /** intermediate units of the MLP */
  ffn: Range;
  /** vocabulary rows that exist (the last rank's slice may be shorter than vocabPerRank) */
  vocab: Range;
}

export interface TensorParallelLayout {
  size: number;
  /** ⌈vocab / N⌉: every rank's embedding shard has this many rows (zero-padded), plus one zero row */
  vocabPerRank: number;
  ranks: RankShard[];
  /**
   * The config one rank's layers and KV cache see: its heads, KV heads and intermediate units
   * (everything else as the model's).
   */
  rankConfigs: Gemma3Config[];
}

/**
 * The split of `config` over `size` ranks.
 * @throws UnsupportedError when heads, KV heads or intermediate units do not divide: ranks take
 *   whole heads and equal slices (no padding). The vocabulary is padded instead (the last rank's
 *   slice is zero-filled), since logits are gathered by column ranges anyway.
 */
export function tensorParallelLayout(config: Gemma3Config, size: number): TensorParallelLayout {
  const {
    numAttentionHeads: hq,
    numKeyValueHeads: hkv,
    intermediateSize: f,
    vocabSize: v,
  } = config;
  const refuse = (what: string) => {
    throw new UnsupportedError(`tensor parallel ${size}: ${what}`, "E_UNSUPPORTED");
  };
  if (!Number.isInteger(size) || size < 1) refuse("the rank count must be an integer >= 1");
  if (hq % size !== 0)
    refuse(`num_attention_heads ${hq} is not a multiple of ${size} (each rank takes whole heads)`);
  if (hkv >= size ? hkv % size !== 0 : size % hkv !== 0)
    refuse(
      `num_key_value_heads ${hkv} neither splits over ${size} ranks nor replicates evenly ` +
        `(need a multiple or a divisor of ${size})`,
    );
  if (f % size !== 0) refuse(`intermediate_size ${f} is not a multiple of ${size}`);
  const qPer = hq / size;
  const group = hq / hkv; // q heads per KV head
  const fPer = f / size;
  const vocabPerRank = Math.ceil(v / size);
  const ranks: RankShard[] = [];
  const rankConfigs: Gemma3Config[] = [];
  for (let r = 0; r < size; r++) {
    const q0 = r * qPer;
    // Replicated: the KV head of this rank's q heads (they all share it: qPer divides group).
    const kv: Range =
      hkv >= size
        ? [(r * hkv) / size, ((r + 1) * hkv) / size]
        : [Math.floor(q0 / group), Math.floor(q0 / group) + 1];
    const vocab: Range = [Math.min(v, r * vocabPerRank), Math.min(v, (r + 1) * vocabPerRank)];
    ranks.push({
      rank: r,
      qHeads: [q0, q0 + qPer],
      kvHeads: kv,
      ffn: [r * fPer, (r + 1) * fPer],
      vocab,
    });
    rankConfigs.push({
      ...config,
      numAttentionHeads: qPer,
      numKeyValueHeads: kv[1] - kv[0],
      intermediateSize: fPer,
    });
  }
  return { size, vocabPerRank, ranks, rankConfigs };
}
