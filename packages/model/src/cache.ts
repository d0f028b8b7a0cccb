// The KV cache lives in @gemma3/kv-cache (rings for sliding layers, shared pages for global
// layers, one plan per step); the model re-exports what its callers use with it.
export {
  HybridKVCache,
  KVSequence,
  KVCacheError,
  KVCacheFullError,
  cachedAttention,
  type HybridKVCacheOptions,
  type KVCache,
  type LayerKV,
  type StepPlan,
} from "@gemma3/kv-cache";
