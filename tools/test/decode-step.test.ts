// tools/bench/decode-step.mjs runs end to end on the CPU backend with the tiny fixture (the GPU
// machine runs it at real shapes): it reaches the captured decode graph (a private field of the
// model, so a rename breaks it here first) and reports every timing it promises.
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(__dirname, "..", "..");

describe("decode-step.mjs", () => {
  it("times replay, forward, argmax and head on the tiny model", () => {
    const out = execFileSync(
      process.execPath,
      [
        join(root, "tools/bench/decode-step.mjs"),
        join(root, "packages/model/test/fixtures/tiny-1b/config.json"),
        "--device",
        "cpu",
        "--steps",
        "2",
      ],
      { encoding: "utf8" },
    );
    const r = JSON.parse(out.trim().split("\n").at(-1)!);
    expect(r.nodes).toBeGreaterThan(10); // the graph recorded the step's ops
    for (const k of ["replay", "forward", "argmax", "head"]) {
      expect(r[k].runs_us).toHaveLength(5);
      expect(r[k].median_us).toBeGreaterThan(0);
    }
  });
  it("takes a longer prompt and a larger cache (--prompt, --capacity)", () => {
    const out = execFileSync(
      process.execPath,
      [
        join(root, "tools/bench/decode-step.mjs"),
        join(root, "packages/model/test/fixtures/tiny-1b/config.json"),
        ...["--device", "cpu", "--steps", "1", "--only", "replay"],
        ...["--prompt", "40", "--capacity", "512"],
      ],
      { encoding: "utf8" },
    );
    const r = JSON.parse(out.trim().split("\n").at(-1)!);
    expect(r.prompt).toBe(40);
    expect(r.capacity).toBe(512);
    expect(r.replay.median_us).toBeGreaterThan(0);
    expect(r.forward).toBeUndefined(); // --only replay
  });
});
