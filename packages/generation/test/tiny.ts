// The tiny-1b fixture the scheduler tests run on: its directory, HF's prompt and greedy ids
// (goldens.json, tools/reference), and prompts of different lengths cut from that prompt.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const fixture = join(
  dirname(fileURLToPath(import.meta.url)),
  "../../model/test/fixtures/tiny-1b",
);
export const golden = JSON.parse(readFileSync(join(fixture, "goldens.json"), "utf8")) as {
  prompt_ids: number[];
  greedy_ids: number[];
};
/** Prompts of different lengths (slices of the fixture prompt, rotated). */
export const prompts = [5, 40, 17, 1, 29, 33].map((n, i) =>
  [...golden.prompt_ids.slice(i), ...golden.prompt_ids.slice(0, i)].slice(0, n),
);
