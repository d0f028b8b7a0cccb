// npm run fuzz [-- --long] [--target safetensors|gguf|image] [--seed N] [--inputs N]
//   [--coverage-inputs N] [--save-corpus] [--outcomes] [--json FILE]
// Short run (default, CI-sized): 20k–60k inputs a parser target, 2k images. --long: 10^6 inputs
// per parser target and 10^5 images (FUZZ_LONG=1 does the same). Exit status 1 on any finding;
// findings (input and minimised input) are written to fuzz/findings/.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { corpusOf, fuzz, type FuzzStats, type Target } from "./engine.js";
import { safetensorsTarget } from "./safetensors.js";
import { ggufTarget } from "./gguf.js";
import { imageTarget } from "./image.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", ".."); // fuzz/dist → repo
const FUZZ = join(ROOT, "fuzz");

interface Plan {
  target: Target;
  inputs: number;
  coverageInputs: number;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

const long = flag("long") || process.env.FUZZ_LONG === "1";
const seed = Number(arg("seed") ?? process.env.FUZZ_SEED ?? 1);
const only = arg("target");
const plans: Plan[] = [
  {
    target: safetensorsTarget,
    inputs: long ? 1_000_000 : 40_000,
    coverageInputs: long ? 30_000 : 3_000,
  },
  { target: ggufTarget, inputs: long ? 1_000_000 : 30_000, coverageInputs: long ? 30_000 : 3_000 },
  { target: imageTarget, inputs: long ? 100_000 : 1_500, coverageInputs: long ? 2_000 : 200 },
]
  .filter((p) => !only || p.target.name === only)
  .map((p) => ({
    ...p,
    inputs: Number(arg("inputs") ?? p.inputs),
    coverageInputs: Number(arg("coverage-inputs") ?? p.coverageInputs),
  }));
if (!plans.length) throw new Error(`unknown --target ${only} (safetensors, gguf, image)`);

function loadCorpus(name: string): Uint8Array[] {
  const dir = join(FUZZ, "corpus", name);
  try {
    return readdirSync(dir)
      .sort()
      .map((f) => new Uint8Array(readFileSync(join(dir, f))));
  } catch {
    return [];
  }
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex").slice(0, 16);

/**
 * Keeps one small input per distinct outcome (the smallest seen), at most `cap` files of at most
 * `maxBytes` each, rarest outcome first: the regression corpus replayed by the CI test.
 */
async function saveCorpus(
  t: Target,
  inputs: Uint8Array[],
  seen: Map<string, number>,
  cap: number,
  maxBytes: number,
) {
  const best = new Map<string, Uint8Array>();
  for (const b of inputs) {
    if (b.length > maxBytes) continue;
    const f = (await t.run(b)).feature;
    const cur = best.get(f);
    if (!cur || b.length < cur.length) best.set(f, b);
  }
  const dir = join(FUZZ, "corpus", t.name);
  mkdirSync(dir, { recursive: true });
  // Rarest outcomes first: the paths the run reached least often are the ones worth replaying.
  const kept = [...best]
    .sort(([f, a], [g, b]) => (seen.get(f) ?? 0) - (seen.get(g) ?? 0) || a.length - b.length)
    .slice(0, cap)
    .map(([, b]) => b);
  for (const b of kept) writeFileSync(join(dir, `${sha(b)}.bin`), b);
  return kept.length;
}

function report(s: FuzzStats): Record<string, unknown> {
  const mb = (n: number) => Math.round((n / 2 ** 20) * 10) / 10;
  return {
    target: s.target,
    inputs: s.inputs,
    coverageInputs: s.coverageInputs,
    seconds: Math.round(s.elapsedMs / 100) / 10,
    inputsPerSecond: Math.round((s.inputs + s.coverageInputs) / (s.elapsedMs / 1000)),
    outcomes: s.features,
    coverageFeatures: s.coverageFeatures,
    corpus: s.corpusSize,
    findings: s.findings.length,
    maxMsPerInput: Math.round(s.maxMs * 100) / 100,
    maxMsInputBytes: s.maxMsBytes,
    maxInputBytes: s.maxInputBytes,
    maxAllocatedBytes: s.maxAllocated,
    maxAllocatedInputBytes: s.maxAllocatedInputBytes,
    maxAllocatedOverInput: Math.round(s.maxAllocatedRatio * 1000) / 1000,
    baseRssMB: mb(s.baseRss),
    peakRssMB: mb(s.peakRss),
    peakHeapUsedMB: mb(s.peakHeapUsed),
    peakArrayBuffersMB: mb(s.peakArrayBuffers),
  };
}

let failed = false;
const results: Record<string, unknown>[] = [];
for (const p of plans) {
  const corpus = loadCorpus(p.target.name);
  console.log(
    `fuzz ${p.target.name}: seed ${seed}, ${p.coverageInputs} coverage-guided + ${p.inputs} inputs, ` +
      `${corpus.length} corpus files`,
  );
  const s = await fuzz(p.target, {
    seed,
    inputs: p.inputs,
    coverageInputs: p.coverageInputs,
    corpus,
    progressEvery: long ? 100_000 : 1_000_000,
    onProgress: (st) =>
      console.log(
        `  ${st.inputs} inputs, ${st.features} outcomes, ${st.findings.length} findings, ` +
          `max ${st.maxMs.toFixed(1)} ms, ${(st.elapsedMs / 1000).toFixed(0)} s`,
      ),
  });
  const r = report(s);
  results.push(r);
  console.log(JSON.stringify(r));
  if (s.findings.length) {
    failed = true;
    const dir = join(FUZZ, "findings");
    mkdirSync(dir, { recursive: true });
    for (const f of s.findings) {
      const id = `${p.target.name}-${sha(f.minimized)}`;
      writeFileSync(join(dir, `${id}.bin`), f.minimized);
      writeFileSync(join(dir, `${id}.orig.bin`), f.input);
      writeFileSync(join(dir, `${id}.txt`), f.error);
      console.log(`FINDING ${id} (${f.minimized.length} bytes): ${f.error.split("\n")[0]}`);
    }
  }
  if (s.slowest) {
    mkdirSync(join(FUZZ, "findings"), { recursive: true });
    writeFileSync(join(FUZZ, "findings", `${p.target.name}-slowest.bin`), s.slowest);
  }
  if (flag("save-corpus")) {
    const image = p.target.name === "image";
    const n = await saveCorpus(
      p.target,
      corpusOf(s),
      s.outcomes,
      image ? 100 : 150,
      image ? 8192 : 2048,
    );
    console.log(`  saved ${n} corpus files to fuzz/corpus/${p.target.name}`);
  }
  if (flag("outcomes"))
    for (const [k, v] of [...s.outcomes].sort((a, b) => b[1] - a[1])) console.log(`  ${v}\t${k}`);
}
const json = arg("json");
if (json) writeFileSync(json, JSON.stringify({ seed, long, results }, null, 2));
process.exit(failed ? 1 : 0);
