// Stop tokens: the eos ids of config.json (top level or text_config) and generation_config.json.

function eosIds(json: unknown, where: string): number[] {
  if (json === null || json === undefined) return [];
  if (typeof json !== "object") throw new Error(`${where}: expected an object`);
  const v = (json as { eos_token_id?: unknown }).eos_token_id;
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list)
    if (!Number.isInteger(id) || id < 0)
      throw new Error(
        `${where}: eos_token_id must be a token id or a list of them, got ${JSON.stringify(v)}`,
      );
  return list as number[];
}

/**
 * Ids that end generation: the union, in order of first appearance, of `eos_token_id` (an id or a
 * list) in config.json, its text_config, and generation_config.json. Gemma 3: [1, 106]
 * (<eos>, <end_of_turn>). Empty if none of them names one.
 */
export function stopTokenIds(configJson: unknown, generationConfigJson?: unknown): number[] {
  const text = (configJson as { text_config?: unknown } | undefined)?.text_config;
  const all = [
    ...eosIds(configJson, "config.json"),
    ...eosIds(text, "config.json text_config"),
    ...eosIds(generationConfigJson, "generation_config.json"),
  ];
  return [...new Set(all)];
}
