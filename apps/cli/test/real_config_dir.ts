// A model directory with the real gemma-3-4b-it config.json (256 soft tokens per image) and
// preprocessor_config.json beside the real tokenizer from demo-model/ (symlinked): what the
// tokenize tests compare with HF's Gemma3Processor. (The demo checkpoint itself has a small vision
// tower with 16 soft tokens per image.)
import { copyFileSync, mkdirSync, symlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));

export function realConfigDir(tmp: string): string {
  const dir = join(tmp, "gemma-3-4b-it-config");
  mkdirSync(dir, { recursive: true });
  copyFileSync(
    join(root, "../../packages/model/test/fixtures/configs/gemma-3-4b-it.config.json"),
    join(dir, "config.json"),
  );
  copyFileSync(
    join(root, "../../packages/vision/test/fixtures/preprocessor_config.json"),
    join(dir, "preprocessor_config.json"),
  );
  for (const f of ["tokenizer.json", "tokenizer_config.json"])
    symlinkSync(join(root, "demo-model", f), join(dir, f));
  return dir;
}
