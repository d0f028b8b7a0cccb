// The web chat page served at `/`: one self-contained HTML file (no build step, no CDN) that talks
// to this server's own /v1/chat/completions with streaming. Images are attached by file picker,
// drag and drop or paste, and sent as data: URLs; Pan & Scan is a per-request switch; Stop aborts
// the fetch (the server then cancels the generation and frees its KV).
export const CHAT_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Gemma 3 chat</title>
<style>
  :root { color-scheme: light dark; --accent: #1a73e8; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, sans-serif; display: flex; flex-direction: column; height: 100vh; }
  header { padding: .6rem 1rem; border-bottom: 1px solid #8884; display: flex; gap: 1rem; align-items: center; }
  header h1 { font-size: 1rem; margin: 0; }
  #model { opacity: .7; font-size: .85rem; }
  #log { flex: 1; overflow-y: auto; padding: 1rem; display: flex; flex-direction: column; gap: .8rem; }
  .msg { max-width: 48rem; padding: .6rem .8rem; border-radius: .6rem; white-space: pre-wrap; word-wrap: break-word; }
  .user { align-self: flex-end; background: #1a73e822; }
  .assistant { align-self: flex-start; background: #8881; }
  .msg img { max-width: 12rem; max-height: 12rem; display: block; margin-bottom: .4rem; border-radius: .3rem; }
  .error { color: #d33; }
  .stats { font-size: .75rem; opacity: .6; margin-top: .3rem; }
  form { border-top: 1px solid #8884; padding: .6rem 1rem; display: flex; flex-direction: column; gap: .4rem; }
  textarea { width: 100%; min-height: 3.5rem; resize: vertical; font: inherit; padding: .5rem; }
  .row { display: flex; gap: .6rem; align-items: center; flex-wrap: wrap; }
  button { font: inherit; padding: .35rem .9rem; }
  #attachments img { height: 3rem; margin-right: .3rem; border-radius: .2rem; }
  label { font-size: .9rem; }
</style>
</head>
<body>
<header><h1>Gemma 3</h1><span id="model">connecting…</span></header>
<main id="log" aria-live="polite"></main>
<form id="form">
  <div id="attachments"></div>
  <textarea id="input" placeholder="Message (Enter to send, Shift+Enter for a new line; paste or drop an image)"></textarea>
  <div class="row">
    <button type="submit" id="send">Send</button>
    <button type="button" id="stop" disabled>Stop</button>
    <label><input type="file" id="file" accept="image/png,image/jpeg,image/webp,image/gif" multiple> Image</label>
    <label><input type="checkbox" id="pas"> Pan &amp; Scan</label>
    <label>max tokens <input type="number" id="max" value="256" min="1" style="width:5rem"></label>
    <label>temperature <input type="number" id="temp" value="1" min="0" max="2" step="0.1" style="width:4rem"></label>
    <span id="status"></span>
  </div>
</form>
<script>
const $ = (id) => document.getElementById(id);
const log = $("log"), input = $("input"), form = $("form");
const history = [];
let images = [];
let controller = null;
let modelId = null;
let apiKey = localStorage.getItem("gemma3-api-key") || "";

function headers() {
  const h = { "content-type": "application/json" };
  if (apiKey) h.authorization = "Bearer " + apiKey;
  return h;
}

async function loadModel() {
  const r = await fetch("/v1/models", { headers: headers() });
  if (r.status === 401) {
    apiKey = prompt("API key") || "";
    localStorage.setItem("gemma3-api-key", apiKey);
    return loadModel();
  }
  if (!r.ok) { $("model").textContent = "model not ready (" + r.status + ")"; setTimeout(loadModel, 2000); return; }
  const m = (await r.json()).data[0];
  modelId = m.id;
  $("model").textContent = m.id + " · context " + m.max_model_len + " · " + (m.modalities || ["text"]).join(", ");
}

function addMessage(role, text, imgs) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  for (const src of imgs || []) { const im = document.createElement("img"); im.src = src; div.appendChild(im); }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.appendChild(body);
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const fr = new FileReader();
    fr.onload = () => resolve(fr.result);
    fr.onerror = () => reject(fr.error);
    fr.readAsDataURL(file);
  });
}

async function attach(files) {
  for (const f of files) {
    if (!f.type.startsWith("image/")) continue;
    images.push(await readFile(f));
  }
  renderAttachments();
}

function renderAttachments() {
  const a = $("attachments");
  a.innerHTML = "";
  for (const src of images) { const im = document.createElement("img"); im.src = src; a.appendChild(im); }
}

$("file").addEventListener("change", (e) => attach(e.target.files));
input.addEventListener("paste", (e) => {
  const files = [...e.clipboardData.items].filter((i) => i.kind === "file").map((i) => i.getAsFile());
  if (files.length) { e.preventDefault(); attach(files); }
});
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => { e.preventDefault(); attach(e.dataTransfer.files); });
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text && images.length === 0) return;
  if (controller) return;
  const content = [...images.map((url) => ({ type: "image_url", image_url: { url } }))];
  if (text) content.push({ type: "text", text });
  addMessage("user", text, images);
  history.push({ role: "user", content: images.length ? content : text });
  input.value = ""; images = []; renderAttachments();
  const out = addMessage("assistant", "");
  const span = out.querySelector(".text");
  controller = new AbortController();
  $("send").disabled = true; $("stop").disabled = false; $("status").textContent = "…";
  const t0 = performance.now();
  let tFirst = 0, tokens = 0, deltas = 0, reply = "", finish = null;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({
        model: modelId,
        messages: history,
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: Number($("max").value) || 256,
        temperature: Number($("temp").value),
        pan_and_scan: $("pas").checked,
      }),
    });
    if (!r.ok) {
      const err = await r.json().catch(() => ({ error: { message: r.statusText } }));
      throw new Error(err.error ? err.error.message : r.statusText);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\\n\\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const ev = JSON.parse(data);
        if (ev.error) throw new Error(ev.error.message);
        if (ev.usage) tokens = ev.usage.completion_tokens;
        for (const c of ev.choices || []) {
          if (c.delta && c.delta.content) {
            if (!tFirst) tFirst = performance.now();
            deltas++;
            reply += c.delta.content;
            span.textContent = reply;
            log.scrollTop = log.scrollHeight;
          }
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
    }
  } catch (err) {
    if (err.name === "AbortError") finish = "stopped";
    else { finish = "error"; out.classList.add("error"); span.textContent = reply + (reply ? "\\n" : "") + "Error: " + err.message; }
  } finally {
    const t = (performance.now() - (tFirst || t0)) / 1000;
    tokens = tokens || deltas;
    const stats = document.createElement("div");
    stats.className = "stats";
    stats.textContent = (finish || "") + (tokens ? " · " + tokens + " tokens · " + (tokens / Math.max(t, 1e-3)).toFixed(1) + " tok/s" : "");
    out.appendChild(stats);
    if (reply) history.push({ role: "assistant", content: reply });
    controller = null;
    $("send").disabled = false; $("stop").disabled = true; $("status").textContent = "";
  }
});
loadModel();
</script>
</body>
</html>
`;
