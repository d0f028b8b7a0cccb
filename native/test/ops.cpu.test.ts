// Every CPU kernel against the plain TypeScript reference (reference.ts), at awkward sizes.
import { describe, it } from "vitest";
import { allCases } from "./cases.js";
import { expectOutputs } from "./compare.js";

describe("CPU kernels vs plain reference", () => {
  for (const c of allCases()) {
    it(c.name, async () => {
      expectOutputs(await c.run("cpu"), c.reference(), c.refTol, c.name);
    });
  }
});
