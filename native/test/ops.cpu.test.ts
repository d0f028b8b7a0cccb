// Every CPU kernel against the plain TypeScript reference (reference.ts), at awkward sizes, with
// tensors packed and at unaligned offsets inside larger allocations.
import { describe, it } from "vitest";
import { allCases, setLayout, type Layout } from "./cases.js";
import { expectOutputs } from "./compare.js";

for (const layout of ["packed", "offset"] as Layout[]) {
  describe(`CPU kernels vs plain reference (${layout})`, () => {
    for (const c of allCases()) {
      it(c.name, async () => {
        setLayout(layout);
        expectOutputs(await c.run("cpu"), c.reference(), c.refTol, c.name);
      });
    }
  });
}
