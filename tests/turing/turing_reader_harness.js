// Runs retina_fast/turing/static/reader.js against a stub DOM and a scripted server (node, no browser)
// and prints what the reader sees: `node turing_reader_harness.js READER_JS die|restart|drop`.
// Used by tests/turing/test_app.py::test_reader_page_after_a_lost_reply.
const fs = require("fs"), vm = require("vm");
const A = "a".repeat(32), B = "b".repeat(32);
function el(id) {
  return {id, hidden: false, textContent: "", disabled: false, value: "", max: 0, src: "", style: {},
          naturalWidth: 10, clientWidth: 10, listeners: {}, classList: {toggle() {}},
          addEventListener(t, f) { (this.listeners[t] = this.listeners[t] || []).push(f); },
          removeAttribute(a) { if (a === "src") this.src = ""; },
          getAttribute(a) { return a === "src" ? this.src : null; },
          fire(t, e) { return Promise.all((this.listeners[t] || []).map((f) => f(e || {}))); }};
}
const els = {};
const document = {getElementById: (id) => (els[id] = els[id] || el(id)),
                  listeners: {}, addEventListener() {}};
// failure: null, "die" (answer stored, reply lost, server down), "restart" (stored, reply lost,
// server back at once) or "drop" (request lost before the server saw it)
const server = {up: true, saved: [], pos: 0, failure: null};
const reply = (status, data) => ({ok: status < 300, status, json: async () => data});
async function fetch(url, opt) {
  if (!server.up) throw new TypeError("network");
  const path = url.split("/").slice(4).join("/");
  if (path === "state") {
    const ids = [A, B];
    return reply(200, {profile_done: true, position: server.pos, total: 2,
                       image_id: server.pos < 2 ? ids[server.pos] : null, done: server.pos >= 2});
  }
  if (path === "answer") {
    const body = JSON.parse(opt.body);
    const current = [A, B][server.pos];
    if (body.image_id !== current) {
      return server.saved.includes(body.image_id)
        ? reply(409, {detail: "image already answered", image_id: body.image_id})
        : reply(409, {detail: "not the current image"});
    }
    if (server.failure === "drop") throw new TypeError("request lost");
    server.saved.push(body.image_id); server.pos += 1;
    if (server.failure) { server.up = server.failure === "restart"; throw new TypeError("reply lost"); }
    return reply(200, {position: server.pos, done: server.pos >= 2});
  }
  return reply(404, {detail: "?"});
}
const ctx = {document, fetch, console, setTimeout, encodeURIComponent, decodeURIComponent,
             location: {pathname: "/r/tok_tok_tok_tok_tok_1", href: "x"},
             history: {pushState() {}}, window: {addEventListener() {}},
             performance: {now: () => 1000}};
vm.createContext(ctx);
const settle = () => new Promise((r) => setTimeout(r, 20));
const seen = () => ({error: els.error.hidden ? "" : els.error.textContent, src: els["study-image"].src,
                     progress: els["progress-text"].textContent, buttons: !els["btn-real"].disabled});
(async () => {
  const scenario = process.argv[3];  // die, restart or drop
  vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), ctx);
  await settle();
  await els["study-image"].fire("load"); await settle();
  const out = {start: seen()};
  server.failure = scenario;
  await els["btn-real"].fire("click"); await settle();
  out.after_failure = seen();
  server.up = true; server.failure = null;
  await els["btn-real"].fire("click"); await settle();
  out.after_retry = seen();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
