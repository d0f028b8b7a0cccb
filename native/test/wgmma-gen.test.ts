// The wgmma wrappers (native/kernels/cuda/wgmma_gen.inc) are generated: the committed file must be
// what native/scripts/gen-wgmma.mjs writes, so an edit to either one alone fails here.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

// @ts-expect-error: a plain .mjs script without type declarations
import { renderWgmma, wgmmaIncPath } from "../scripts/gen-wgmma.mjs";

describe("wgmma_gen.inc", () => {
  it("is the generator's output", () => {
    expect(readFileSync(wgmmaIncPath as string, "utf8")).toBe((renderWgmma as () => string)());
  });
  it("declares each shape the sm_90a prefill kernel uses", () => {
    const text = readFileSync(wgmmaIncPath as string, "utf8");
    for (const fn of ["wgmma_m64n64k16_ss", "wgmma_m64n128k16_rs_tb", "wgmma_m64n256k16_rs_tb"]) {
      expect(text).toContain(`void ${fn}(`);
    }
  });
});
