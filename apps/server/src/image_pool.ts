// A small pool of worker threads for image decode + preprocessing (worker/image-worker.mjs), so a
// large image never blocks the event loop that streams every other request. Workers start on the
// first image and a job goes to the worker with the fewest jobs queued.
import { Worker } from "node:worker_threads";
import { ImageError, type PreprocessOptions } from "@gemma3/vision";

interface Job {
  resolve: (r: { pixels: Float32Array; numCrops: number }) => void;
  reject: (e: Error) => void;
}

export class ImagePool {
  private readonly workers: { w: Worker; jobs: Map<number, Job> }[] = [];
  private nextId = 0;
  private closed = false;

  constructor(private readonly size = 2) {}

  /** Decodes and preprocesses one image (a data: URL or bytes); ImageError for a bad image. */
  run(
    src: string | Uint8Array,
    opts: PreprocessOptions,
  ): Promise<{ pixels: Float32Array; numCrops: number }> {
    if (this.closed) return Promise.reject(new Error("image pool is closed"));
    if (this.workers.length < this.size) this.spawn();
    const slot = this.workers.reduce((a, b) => (b.jobs.size < a.jobs.size ? b : a));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      slot.jobs.set(id, { resolve, reject });
      slot.w.postMessage({ id, src, opts });
    });
  }

  private spawn(): void {
    const w = new Worker(new URL("../worker/image-worker.mjs", import.meta.url));
    const slot = { w, jobs: new Map<number, Job>() };
    w.on(
      "message",
      (m: {
        id: number;
        pixels?: Float32Array;
        numCrops?: number;
        error?: { name?: string; code?: string; message: string };
      }) => {
        const job = slot.jobs.get(m.id);
        slot.jobs.delete(m.id);
        if (!job) return;
        if (m.error) {
          job.reject(
            m.error.name === "ImageError"
              ? new ImageError(
                  m.error.code as ConstructorParameters<typeof ImageError>[0],
                  m.error.message,
                )
              : new Error(m.error.message),
          );
        } else job.resolve({ pixels: m.pixels!, numCrops: m.numCrops! });
      },
    );
    // A crashed worker fails its jobs and leaves the pool (the next image starts a new one).
    const fail = (e: Error) => {
      for (const j of slot.jobs.values()) j.reject(e);
      slot.jobs.clear();
      const i = this.workers.indexOf(slot);
      if (i >= 0) this.workers.splice(i, 1);
    };
    w.on("error", fail);
    w.on("exit", (code) => fail(new Error(`image worker exited with code ${code}`)));
    w.unref();
    this.workers.push(slot);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.splice(0).map((s) => s.w.terminate()));
  }
}
