// The benchmark's HTTP client, in a worker thread: posts one streamed completion per message and
// answers with the arrival time of every content chunk (performance.now() is shared with the main
// thread's time origin via timeOrigin offsets) and the completion token count.
import { parentPort } from "node:worker_threads";

const skew = performance.timeOrigin;
parentPort.on("message", async ({ id, url, body }) => {
  try {
    const start = performance.now();
    const r = await fetch(url, { method: "POST", body: JSON.stringify(body) });
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
    const times = [];
    let tokens = 0;
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of r.body) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const data = buf.slice(0, i).replace(/^data: /, "");
        buf = buf.slice(i + 2);
        if (data === "[DONE]") continue;
        const ev = JSON.parse(data);
        if (ev.usage) tokens = ev.usage.completion_tokens;
        if (ev.choices?.[0]?.text) times.push(performance.now());
      }
    }
    // Times relative to this thread's origin; the main thread only uses differences.
    parentPort.postMessage({ id, result: { start, times, end: performance.now(), tokens, skew } });
  } catch (e) {
    parentPort.postMessage({ id, error: e.message });
  }
});
