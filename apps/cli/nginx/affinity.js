// njs (nginx's JavaScript module) for `gemma3 replicas --routing prefix`: the key nginx's
// `hash $gemma3_affinity consistent` places a request by, so that every turn of one conversation
// reaches the replica whose prefix cache holds its earlier turns.
//
// A chat request's key is a digest of its messages up to and including the first user message
// (the system prompt and the opening question): later turns only append to the list, so the key
// stays fixed while the conversation grows, and two users sharing a system prompt still spread
// over the replicas. An X-Session-Id header, when sent, wins (a client that knows its sessions,
// or a /v1/completions prompt). Anything else (GET requests, bodies that are not a chat, a body
// nginx kept in a file) gets the request's random id: plain spreading.
//
// It runs when nginx picks the upstream, after the body was read (proxy_request_buffering on,
// the default); r.requestText is the body only while it is in memory (client_body_buffer_size
// is the body limit, so it always is under the config gemma3 replicas writes).
import crypto from "crypto";

function key(r) {
  const sid = r.headersIn["X-Session-Id"];
  if (sid) return "s:" + sid;
  let text;
  try {
    text = r.requestText; // throws or is undefined when the body went to a temporary file
  } catch (e) {
    text = undefined;
  }
  if (text) {
    try {
      const messages = JSON.parse(text).messages;
      if (Array.isArray(messages) && messages.length > 0) {
        const head = [];
        for (let i = 0; i < messages.length; i++) {
          const m = messages[i] || {};
          head.push([m.role, m.content]);
          if (m.role === "user") break;
        }
        return "m:" + crypto.createHash("sha1").update(JSON.stringify(head)).digest("hex");
      }
    } catch (e) {
      // not JSON: the replica answers 400, whichever it is
    }
  }
  return "r:" + r.variables.request_id;
}

export default { key };
