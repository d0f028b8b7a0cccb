// Image decode + preprocessing off the server's event loop (a worker thread): the PIL-exact resize
// is synchronous JavaScript, ~30 ms for a phone photo and seconds for a 50 M-pixel image, which on
// the main thread would stall every stream. Messages: { id, src, opts } -> { id, pixels, numCrops }
// (pixels transferred, not copied) or { id, error: { name, code, message } }.
import { parentPort } from "node:worker_threads";
import { decode, preprocess } from "@gemma3/vision";

parentPort.on("message", async ({ id, src, opts }) => {
  try {
    const p = preprocess(await decode(src), opts);
    parentPort.postMessage({ id, pixels: p.pixelValues, numCrops: p.numCrops }, [
      p.pixelValues.buffer,
    ]);
  } catch (e) {
    parentPort.postMessage({
      id,
      error: { name: e?.name, code: e?.code, message: String(e?.message ?? e) },
    });
  }
});
