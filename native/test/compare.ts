import { expect } from "vitest";
import type { Outputs, Tol } from "./cases.js";
import { expectClose, relErr } from "./helpers.js";

/** Asserts every output of `got` matches `want` within `tol` (NaN must match NaN exactly). */
export function expectOutputs(got: Outputs, want: Outputs, tol: Tol, what: string): void {
  expect(got.length, `${what}: number of outputs`).toBe(want.length);
  got.forEach((g, i) => {
    const w = want[i]!;
    const label = `${what} output ${i} (${tol.why})`;
    if (tol.kind === "exact" || g instanceof Int32Array) {
      expectClose(g, w, 0, 0, label);
    } else if (tol.kind === "elementwise") {
      expectClose(g, w, tol.atol, tol.rtol, label);
    } else {
      // NaN positions must agree; the norm is taken over the rest.
      const gs: number[] = [];
      const ws: number[] = [];
      for (let j = 0; j < g.length; j++) {
        expect(Number.isNaN(g[j]!), `${label}: NaN at ${j}`).toBe(Number.isNaN(w[j]!));
        if (!Number.isNaN(w[j]!)) {
          gs.push(g[j]!);
          ws.push(w[j]!);
        }
      }
      expect(relErr(gs, ws), label).toBeLessThanOrEqual(tol.rel);
    }
  });
}
