// loadTextModel on broken checkpoints: truncated files, headers lying about offsets/dtype/shape,
// missing or mis-shaped tensors. Each gives an error naming the file and tensor, never a crash,
// and nothing stays allocated.
import { copyFileSync, readFileSync, truncateSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { SafetensorsFile, loadTextModel } from "../src/index.js";
import {
  removeTempDirs,
  tempDir,
  writeSafetensors,
  type TensorSpec,
} from "./safetensors_writer.js";

const fixture = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "tiny-1b");
afterAll(removeTempDirs);

/** A copy of the tiny-1b checkpoint whose tensors pass through `edit` before being written. */
async function broken(
  edit: (t: Record<string, TensorSpec>) => void,
  opts: Parameters<typeof writeSafetensors>[2] = {},
) {
  const src = await SafetensorsFile.open(join(fixture, "model.safetensors"));
  const tensors: Record<string, TensorSpec> = {};
  for (const [name, info] of src.tensors)
    tensors[name] = { dtype: info.dtype, shape: [...info.shape], data: await src.read(name) };
  await src.close();
  edit(tensors);
  const dir = tempDir("load");
  copyFileSync(join(fixture, "config.json"), join(dir, "config.json"));
  writeSafetensors(join(dir, "model.safetensors"), tensors, opts);
  return dir;
}

describe("loadTextModel rejects broken checkpoints with named errors", () => {
  it("a missing tensor names the tensor and the file", async () => {
    const dir = await broken((t) => delete t["model.layers.3.mlp.up_proj.weight"]);
    await expect(loadTextModel(dir)).rejects.toThrow(/layers\.3\.mlp\.up_proj/);
    await expect(loadTextModel(dir)).rejects.toThrow(/model\.safetensors/);
  });

  it("a mis-shaped tensor names the tensor and both shapes", async () => {
    const dir = await broken((t) => {
      const w = t["model.layers.0.self_attn.k_proj.weight"]!;
      w.shape = [16, 128]; // the same bytes as [32, 64], the wrong shape
    });
    await expect(loadTextModel(dir)).rejects.toThrow(
      /layers\.0\.self_attn\.k_proj.*\[16, ?128\]|\[16, ?128\].*k_proj/s,
    );
  });

  it("a truncated file is refused before any tensor is read", async () => {
    const dir = await broken(() => undefined);
    truncateSync(
      join(dir, "model.safetensors"),
      readFileSync(join(dir, "model.safetensors")).length - 100,
    );
    await expect(loadTextModel(dir)).rejects.toThrow(/model\.safetensors/);
  });

  it("a header lying about a tensor's offsets or dtype is refused", async () => {
    const lie = await broken(() => undefined, {
      editHeader: (h) => {
        const e = h["model.norm.weight"] as { data_offsets: number[] };
        e.data_offsets = [e.data_offsets[0]!, e.data_offsets[1]! + 4];
      },
    });
    await expect(loadTextModel(lie)).rejects.toThrow(/model\.norm\.weight/);
    const dtype = await broken(() => undefined, {
      editHeader: (h) => {
        (h["model.norm.weight"] as { dtype: string }).dtype = "F16";
      },
    });
    await expect(loadTextModel(dtype)).rejects.toThrow(/model\.norm\.weight/);
  });

  it("a missing directory or config gives a clear error", async () => {
    await expect(loadTextModel("/nonexistent/gemma")).rejects.toThrow(/config\.json/);
  });
});
