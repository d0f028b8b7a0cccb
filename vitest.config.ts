import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineConfig } from "vitest/config";

// One test run for the whole monorepo. Unit tests (no GPU, no weights) run everywhere; CUDA tests
// skip cleanly without a GPU unless GEMMA3_TEST_CUDA=1 demands one (the GPU machine sets it).
export default defineConfig({
  test: {
    include: [
      "native/test/**/*.test.ts",
      "packages/*/test/**/*.test.ts",
      "apps/*/test/**/*.test.ts",
      "fuzz/test/**/*.test.ts",
      "tools/test/**/*.test.ts",
    ],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // The native CPU stream and the GPU are process-wide: test files run in one process, in order.
    pool: "forks",
    fileParallelism: false,
    // The tokenizer caches its parsed form; tests keep it out of the user's home directory.
    // Fault injection (native/runtime/fault.h) is allowed in tests; it is inert until armed.
    env: { GEMMA3_CACHE_DIR: join(tmpdir(), "gemma3-test-cache"), GEMMA3_FAULT_INJECTION: "1" },
  },
});
