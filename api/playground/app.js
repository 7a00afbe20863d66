// falocal playground: runs the served endpoints through this server's own
// queue API (same origin), with forms made from /openapi.json.
"use strict";

const BASE = location.origin;
const KEY_STORE = "falocal_key";
const root = document.getElementById("main");

// ---- small helpers ----

function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "text") n.textContent = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else if (v === true) n.setAttribute(k, "");
    else n.setAttribute(k, String(v));
  }
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    n.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return n;
}

function bytes(n) {
  if (typeof n !== "number") return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

let fieldSeq = 0;
const uid = (p) => p + "-" + (++fieldSeq);

function getKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

function headers(extra) {
  const h = Object.assign({}, extra);
  const k = getKey();
  if (k) h["Authorization"] = "Key " + k;
  return h;
}

class APIError extends Error {
  constructor(status, detail, body) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.body = body;
  }
}

// api fetches a path of this server; a 401 (no key yet) or a 403 for a
// wrong key sends the user to the key form.
async function api(path, opts) {
  opts = opts || {};
  const res = await fetch(path, Object.assign({}, opts, { headers: headers(opts.headers) }));
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
  if (!res.ok) {
    const detail = body && body.detail !== undefined ? body.detail : (typeof body === "string" ? body : res.statusText);
    if (res.status === 401 || (res.status === 403 && getKey() && /credentials/i.test(String(detail)))) {
      askKey(res.status === 403 ? "The key was refused: " + detail : null);
    }
    throw new APIError(res.status, detail, body);
  }
  return body;
}

function showError(where, err) {
  const msg = err instanceof APIError ? `${err.status}: ${err.message}` : String(err && err.message || err);
  where.append(el("div", { class: "error", role: "alert", text: msg }));
}

// ---- key ----

function updateKeyState() {
  const s = document.getElementById("keystate");
  s.textContent = "";
  if (getKey()) {
    s.append("API key set", el("button", { type: "button", onclick: () => { sessionStorage.removeItem(KEY_STORE); askKey(); } }, "Forget key"));
  }
}

let asking = false;
function askKey(problem) {
  if (asking) return;
  asking = true;
  root.textContent = "";
  const id = uid("key");
  const form = el("form", { class: "run", id: "keyform" },
    el("h1", { text: "API key" }),
    el("p", { text: "This server requires an API key (it runs with -keys). It is kept in this tab only (sessionStorage)." }),
    problem ? el("div", { class: "error", role: "alert", text: problem }) : null,
    el("div", { class: "field" },
      el("label", { for: id, text: "Key (key_id:key_secret)" }),
      el("input", { id, name: "key", type: "password", autocomplete: "off", required: true })),
    el("div", { class: "actions" }, el("button", { class: "primary", type: "submit", text: "Use key" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_STORE, form.querySelector("input").value.trim());
    asking = false;
    updateKeyState();
    route();
  });
  root.append(form);
  form.querySelector("input").focus();
}

// ---- OpenAPI ----

let openapi = null;
async function loadOpenAPI() {
  if (openapi) return openapi;
  try {
    openapi = await api("/openapi.json");
  } catch (e) {
    if (e instanceof APIError && (e.status === 401 || e.status === 403)) throw e;
    openapi = { paths: {}, components: { schemas: {} }, unavailable: String(e.message || e) };
  }
  return openapi;
}

function deref(doc, s) {
  let guard = 0;
  while (s && s.$ref && guard++ < 20) {
    const parts = s.$ref.replace(/^#\//, "").split("/");
    let cur = doc;
    for (const p of parts) cur = cur && cur[p.replace(/~1/g, "/").replace(/~0/g, "~")];
    s = cur;
  }
  return s;
}

function endpointDoc(doc, id) {
  const post = doc.paths && doc.paths["/" + id] && doc.paths["/" + id].post;
  if (!post) return null;
  const c = post.requestBody && post.requestBody.content && post.requestBody.content["application/json"];
  return { post, input: c ? deref(doc, c.schema) : null };
}

// ---- router ----

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => { updateKeyState(); route(); });

let current = null; // the shown page's cleanup (a timer, an open status stream)
let routeSeq = 0;
async function route() {
  if (current) { current(); current = null; }
  if (asking) return;
  const seq = ++routeSeq;
  const h = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  // Each page builds its own view, shown once it is ready unless another
  // route started meanwhile.
  const view = el("div");
  let cleanup = null;
  try {
    if (h === "") cleanup = await home(view);
    else if (h === "history") await history(view);
    else cleanup = await endpointPage(h, view);
  } catch (e) {
    if (!asking) showError(view, e);
  }
  if (seq !== routeSeq || asking) {
    if (cleanup) cleanup();
    return;
  }
  current = cleanup;
  root.replaceChildren(view);
  root.focus();
}

// ---- home ----

async function home(main) {
  const [info, doc] = await Promise.all([api("/playground/api/info"), loadOpenAPI()]);
  document.title = "falocal playground";
  main.append(el("h1", { text: "Endpoints" }));
  const rt = info.runtime || {};
  const ort = rt.onnxruntime || {};
  const rtList = el("dl", { class: "kv" });
  const add = (k, v) => { if (v !== undefined && v !== null && v !== "") rtList.append(el("dt", { text: k }), el("dd", { text: v })); };
  add("falocal", rt.version);
  add("ONNX Runtime", ort.version);
  add("Providers", Array.isArray(ort.providers) ? ort.providers.join(", ") : ort.providers);
  for (const [k, v] of Object.entries(rt)) {
    if (k === "version" || k === "onnxruntime") continue;
    add(k.replace(/_/g, " "), typeof v === "object" ? JSON.stringify(v) : v);
  }
  if (info.memory) add("Memory", `${bytes(info.memory.available_bytes)} free of ${bytes(info.memory.total_bytes)}`);
  const q = info.queue || {};
  const qList = el("dl", { class: "kv", id: "queue-state" },
    el("dt", { text: "Queued" }), el("dd", { text: q.queued }),
    el("dt", { text: "Running" }), el("dd", { text: q.running }),
    el("dt", { text: "Workers" }), el("dd", { text: q.workers }),
    el("dt", { text: "Queue limit" }), el("dd", { text: q.max_queued ? q.max_queued : "none" }));
  main.append(el("div", { class: "cards" },
    el("section", { class: "card" }, el("h2", { text: "Runtime" }), rtList),
    el("section", { class: "card" }, el("h2", { text: "Queue" }), qList)));
  // The queue changes while the page is open: refresh its counts.
  const timer = setInterval(async () => {
    try {
      const q = (await api("/playground/api/info")).queue;
      const dd = qList.querySelectorAll("dd");
      dd[0].textContent = q.queued;
      dd[1].textContent = q.running;
    } catch (e) { clearInterval(timer); }
  }, 3000);

  const tb = el("tbody");
  for (const ep of info.endpoints) {
    const d = endpointDoc(doc, ep.id);
    const m = ep.models;
    let models = el("span", { class: "muted", text: "—" });
    if (m) {
      models = el("span", {}, m.installed.length ? m.installed.map((n, i) => [i ? ", " : "", n === m.default ? el("strong", { text: n }) : n]) : el("span", { class: "muted", text: "none installed" }));
    }
    tb.append(el("tr", { "data-endpoint": ep.id },
      el("td", {}, el("a", { href: "#/" + ep.id, text: ep.id })),
      el("td", { text: d && d.post.summary ? d.post.summary : "" }),
      el("td", {}, models),
      el("td", {}, ep.usable ? el("span", { class: "badge ok", text: "ready" }) :
        el("span", { class: "badge bad", title: m && m.missing ? m.missing : "", text: "no model" }))));
  }
  main.append(el("h2", { text: "Served endpoints" }),
    el("table", { id: "endpoints" }, el("thead", {}, el("tr", {}, el("th", { text: "Endpoint" }), el("th", { text: "What it does" }),
      el("th", { text: "Installed models (default in bold)" }), el("th", { text: "State" }))), tb));
  if (doc.unavailable) main.append(el("p", { class: "muted", text: "No input schemas (/openapi.json: " + doc.unavailable + "): forms take raw JSON." }));
  return () => clearInterval(timer);
}

// ---- history ----

async function history(main) {
  document.title = "History · falocal playground";
  const h = await api("/playground/api/history?limit=30");
  main.append(el("h1", { text: "Recent requests" }));
  if (!h.items.length) { main.append(el("p", { class: "muted", text: "No queued requests yet." })); return; }
  const view = el("div", { id: "history-result" });
  const tb = el("tbody");
  for (const it of h.items) {
    const open = el("button", { type: "button", text: "Show", onclick: async () => {
      view.textContent = "";
      let output = it.output;
      try {
        if (it.status === "COMPLETED" && !it.error && !output) output = await api(`/${it.app}/requests/${it.request_id}`);
      } catch (e) { showError(view, e); return; }
      view.append(el("h2", { text: `${it.endpoint} · ${it.request_id}` }));
      if (it.logs.length) view.append(el("details", {}, el("summary", { text: `Logs (${it.logs.length})` }), el("pre", { class: "logs", text: it.logs.map(fmtLog).join("\n") })));
      if (it.error) view.append(el("div", { class: "error", text: it.error }));
      if (output) view.append(resultView(it.endpoint, null, output));
      view.scrollIntoView({ block: "start" });
    } });
    tb.append(el("tr", {},
      el("td", { text: new Date(it.created_at).toLocaleString() }),
      el("td", {}, el("a", { href: "#/" + it.endpoint, text: it.endpoint })),
      el("td", {}, it.error ? el("span", { class: "badge bad", text: "error" }) : el("span", { class: it.status === "COMPLETED" ? "badge ok" : "badge", text: it.status.toLowerCase().replace("_", " ") })),
      el("td", { text: it.inference_time ? it.inference_time.toFixed(2) + " s" : "" }),
      el("td", {}, it.status === "COMPLETED" ? open : "")));
  }
  main.append(el("table", { id: "history" }, el("thead", {}, el("tr", {}, ["Submitted", "Endpoint", "Status", "Inference", ""].map((t) => el("th", { text: t })))), tb), view);
}

function fmtLog(l) {
  const t = (l.timestamp || "").slice(11, 23);
  return `${t} ${l.level || ""} ${l.message}`;
}

// ---- endpoint page: the form ----

// A field knows how to read its value (undefined: leave it out of the input).
async function endpointPage(id, main) {
  const [info, doc] = await Promise.all([api("/playground/api/info"), loadOpenAPI()]);
  const ep = info.endpoints.find((e) => e.id === id);
  if (!ep) { main.append(el("h1", { text: id }), el("div", { class: "error", text: `This server does not serve ${id}.` })); return; }
  document.title = id + " · falocal playground";
  const d = endpointDoc(doc, id);
  main.append(el("h1", { text: id, "data-endpoint": id }));
  if (d && d.post.summary) main.append(el("p", { text: d.post.summary }));
  if (d && d.post.description && d.post.description !== d.post.summary) main.append(el("details", {}, el("summary", { text: "About this endpoint" }), el("p", { text: d.post.description })));
  if (ep.models && ep.models.default) main.append(el("p", { class: "muted", id: "endpoint-model" }, "Runs on ", el("strong", { text: ep.models.default }), " by default."));
  if (!ep.usable && ep.models) main.append(el("div", { class: "error", text: "No installed model serves this endpoint: " + (ep.models.missing || "") }));

  const form = el("form", { class: "run", id: "run-form", novalidate: true });
  const fields = [];
  const adv = el("details", { class: "advanced" }, el("summary", { text: "Advanced" }));
  const schema = d && d.input;
  if (schema && schema.properties) {
    const order = schema["x-fal-order-properties"] || Object.keys(schema.properties);
    const req = new Set(schema.required || []);
    for (const name of order) {
      const p = deref(doc, schema.properties[name]);
      if (!p) continue;
      const f = makeField(doc, name, p, req.has(name));
      if (!f) continue;
      fields.push(f);
      (p["x-fal-advanced"] ? adv : form).append(f.node);
    }
    if (adv.children.length > 1) form.append(adv);
  } else {
    const tid = uid("f");
    const ta = el("textarea", { id: tid, class: "json", rows: 8, text: "{}" });
    form.append(el("div", { class: "field" }, el("label", { for: tid, text: "Input (JSON)" }), ta,
      el("div", { class: "help", text: "No input schema is available for this endpoint; write the input object." })));
    fields.push({ name: null, read: () => JSON.parse(ta.value || "{}") });
  }
  const runBtn = el("button", { class: "primary", type: "submit", id: "run", text: "Run" });
  const cancelBtn = el("button", { type: "button", id: "cancel", text: "Cancel", disabled: true });
  form.append(el("div", { class: "actions" }, runBtn, cancelBtn));
  const out = el("section", { id: "output", "aria-live": "polite" });
  main.append(el("div", { class: "layout" }, form, out));

  let stop = null;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.textContent = "";
    runBtn.disabled = true;
    try {
      let input = {};
      for (const f of fields) {
        const v = await f.read();
        if (f.name === null) input = v;
        else if (v !== undefined) input[f.name] = v;
      }
      const ctl = new AbortController();
      stop = () => ctl.abort();
      await runRequest(id, input, out, cancelBtn, ctl.signal);
    } catch (e) {
      if (e.name !== "AbortError") showError(out, e);
    } finally {
      runBtn.disabled = false;
      cancelBtn.disabled = true;
    }
  });
  return () => { if (stop) stop(); };
}

function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

function help(p) {
  const bits = [];
  if (p.description) bits.push(p.description);
  if (p.minimum !== undefined || p.maximum !== undefined || p.exclusiveMinimum !== undefined) {
    const lo = p.exclusiveMinimum !== undefined ? `> ${p.exclusiveMinimum}` : p.minimum !== undefined ? `≥ ${p.minimum}` : "";
    const hi = p.maximum !== undefined ? `≤ ${p.maximum}` : "";
    bits.push("(" + [lo, hi].filter(Boolean).join(", ") + ")");
  }
  if (p.default !== undefined && p.default !== "" && typeof p.default !== "object") bits.push(`Default: ${p.default}.`);
  return bits.join(" ");
}

function labelFor(id, name, p, required) {
  return el("label", { for: id }, p.title || name, required ? el("span", { class: "req", "aria-hidden": "true", text: " *" }) : null);
}

function makeField(doc, name, p, required) {
  const id = uid("f-" + name.replace(/[^a-z0-9_]/gi, ""));
  const helpText = help(p);
  const helpId = helpText ? id + "-help" : null;
  const helpNode = helpText ? el("div", { class: "help", id: helpId, text: helpText }) : null;
  const wrap = (ctrl, cls) => el("div", { class: "field" + (cls ? " " + cls : "") }, labelFor(id, name, p, required), ctrl, helpNode);

  // union: preset names or a custom {width, height}
  if (p.anyOf) {
    const alts = p.anyOf.map((a) => deref(doc, a));
    const enumAlt = alts.find((a) => a && a.enum);
    const objAlt = alts.find((a) => a && a.type === "object" && a.properties);
    if (enumAlt && objAlt) {
      const sel = el("select", { id, name, "aria-describedby": helpId },
        p.default === undefined ? el("option", { value: "", text: "(default)" }) : null,
        enumAlt.enum.map((v) => el("option", { value: v, text: v, selected: same(v, p.default) })),
        el("option", { value: "__custom", text: "custom…", selected: typeof p.default === "object" }));
      const size = el("div", { class: "size", hidden: true });
      const nums = {};
      for (const [k, sp0] of Object.entries(objAlt.properties)) {
        const sp = deref(doc, sp0);
        const nid = id + "-" + k;
        nums[k] = el("input", { id: nid, type: "number", step: sp.type === "integer" ? 1 : "any", min: sp.minimum, max: sp.maximum,
          value: typeof p.default === "object" && p.default ? p.default[k] : sp.default !== undefined ? sp.default : 1024 });
        size.append(el("div", {}, el("label", { for: nid, text: sp.title || k[0].toUpperCase() + k.slice(1) }), nums[k]));
      }
      const sync = () => { size.hidden = sel.value !== "__custom"; };
      sel.addEventListener("change", sync);
      sync();
      const node = el("div", { class: "field" }, labelFor(id, name, p, required), sel, size, helpNode);
      return { name, node, read: () => {
        let v;
        if (sel.value === "__custom") {
          v = {};
          for (const [k, n] of Object.entries(nums)) v[k] = Number(n.value);
        } else if (sel.value !== "") v = sel.value;
        return v === undefined || same(v, p.default) ? undefined : v;
      } };
    }
  }
  const type = p.type || (p.anyOf && (p.anyOf.find((a) => a.type && a.type !== "null") || {}).type) || "string";

  if (p["x-fal-media"]) return mediaField(id, name, p, required, helpNode, helpId);

  if (p.enum) {
    const sel = el("select", { id, name, "aria-describedby": helpId },
      p.default === undefined ? el("option", { value: "", text: "(default)" }) : null,
      p.enum.map((v) => el("option", { value: JSON.stringify(v), text: String(v), selected: same(v, p.default) })));
    return { name, node: wrap(sel), read: () => {
      if (sel.value === "") return undefined;
      const v = JSON.parse(sel.value);
      return same(v, p.default) ? undefined : v;
    } };
  }
  if (type === "boolean") {
    const cb = el("input", { id, name, type: "checkbox", checked: p.default === true, "aria-describedby": helpId });
    const node = el("div", { class: "field check" }, cb, labelFor(id, name, p, required), helpNode);
    return { name, node, read: () => (cb.checked === (p.default === true) && p.default !== undefined ? undefined : cb.checked) };
  }
  if (type === "integer" || type === "number") {
    const min = p.minimum !== undefined ? p.minimum : p.exclusiveMinimum;
    const input = el("input", { id, name, type: "number", inputmode: type === "integer" ? "numeric" : "decimal",
      step: type === "integer" ? 1 : (p.multipleOf || "any"), min, max: p.maximum,
      value: p.default !== undefined && p.default !== null ? p.default : "", placeholder: p.examples ? String(p.examples[0]) : "",
      required, "aria-describedby": helpId });
    return { name, node: wrap(input), read: () => {
      if (input.value === "") return undefined;
      const v = Number(input.value);
      if (Number.isNaN(v)) throw new Error(`${p.title || name}: not a number`);
      return v === p.default ? undefined : v;
    } };
  }
  if (type === "array" || type === "object") {
    const empty = p.default === undefined || (Array.isArray(p.default) && !p.default.length);
    const ta = el("textarea", { id, name, class: "json", rows: 3, "aria-describedby": helpId,
      placeholder: type === "array" ? "[]" : "{}" });
    if (!empty) ta.value = JSON.stringify(p.default, null, 1);
    return { name, node: wrap(ta), read: () => {
      if (ta.value.trim() === "") return undefined;
      let v;
      try { v = JSON.parse(ta.value); } catch (e) { throw new Error(`${p.title || name}: not valid JSON (${e.message})`); }
      return same(v, p.default) ? undefined : v;
    } };
  }
  const long = name === "prompt" || name === "negative_prompt" || name === "text" || (p.maxLength && p.maxLength > 200);
  const ex = p.examples && p.examples.length ? String(p.examples[0]) : "";
  const ctrl = long
    ? el("textarea", { id, name, rows: name === "prompt" ? 4 : 2, placeholder: ex, required, "aria-describedby": helpId })
    : el("input", { id, name, type: "text", placeholder: ex, required, "aria-describedby": helpId });
  if (typeof p.default === "string") ctrl.value = p.default;
  else if (required && ex && name === "prompt") ctrl.value = ex;
  return { name, node: wrap(ctrl), read: () => {
    const v = ctrl.value;
    if (v === "") return undefined;
    return v === p.default ? undefined : v;
  } };
}

// mediaField takes a file (uploaded through the storage API when the run
// starts) or a URL.
function mediaField(id, name, p, required, helpNode, helpId) {
  const kind = p["x-fal-media"];
  const fileId = id + "-file";
  const file = el("input", { id: fileId, type: "file", accept: kind === "audio" ? "audio/*" : "image/*", "data-field": name });
  const url = el("input", { id, name, type: "text", inputmode: "url", placeholder: p.examples ? String(p.examples[0]) : "https://… or data:…",
    "aria-describedby": helpId, required });
  const preview = el("div", { class: "preview" });
  let uploaded = null; // {file, url}
  file.addEventListener("change", () => {
    preview.textContent = "";
    const f = file.files[0];
    if (!f) return;
    url.value = "";
    url.placeholder = `${f.name} (uploaded when you run)`;
    const obj = URL.createObjectURL(f);
    preview.append(kind === "audio" ? el("audio", { controls: true, src: obj, "aria-label": "Chosen audio" }) : el("img", { class: "thumb checker", src: obj, alt: "Chosen image" }));
  });
  const node = el("div", { class: "field media" },
    el("span", { class: "label", id: id + "-title" }, p.title || name, required ? el("span", { class: "req", "aria-hidden": "true", text: " *" }) : null),
    el("label", { class: "sub", for: fileId, text: kind === "audio" ? "Audio file" : "Image file" }), file, preview,
    el("label", { class: "sub", for: id, text: "or URL" }), url, helpNode);
  return { name, node, media: kind, read: async () => {
    const f = file.files[0];
    if (f && !url.value) {
      if (!uploaded || uploaded.file !== f) uploaded = { file: f, url: await upload(f) };
      return uploaded.url;
    }
    return url.value.trim() || undefined;
  } };
}

// upload stores a file the way fal's clients do: initiate, then PUT the
// bytes to the upload URL; the file URL goes in the input.
async function upload(f) {
  const type = f.type || "application/octet-stream";
  const init = await api("/rest/storage/upload/initiate", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ content_type: type, file_name: f.name }) });
  const put = new URL(init.upload_url, BASE);
  const res = await fetch(put.origin === BASE ? put.pathname + put.search : init.upload_url, { method: "PUT", headers: { "Content-Type": type }, body: f });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new APIError(res.status, "upload failed: " + detail);
  }
  return init.file_url;
}

// ---- running ----

// path keeps a URL of this server as a same-origin path.
function path(u) { const x = new URL(u, BASE); return x.pathname + x.search; }

async function runRequest(id, input, out, cancelBtn, signal) {
  const status = el("div", { class: "status", id: "run-status", role: "status", text: "Submitting…" });
  const prog = el("progress", { id: "run-progress", "aria-label": "Progress" });
  const logs = el("pre", { class: "logs", id: "logs", role: "log", "aria-label": "Logs" });
  out.append(el("h2", { text: "Run" }), status, prog, logs);
  const sub = await api("/" + id, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(input), signal });
  const reqId = sub.request_id;
  status.textContent = `In queue (position ${sub.queue_position}) · ${reqId}`;
  cancelBtn.disabled = false;
  cancelBtn.onclick = async () => {
    cancelBtn.disabled = true;
    try {
      const r = await fetch(path(sub.cancel_url), { method: "PUT", headers: headers() });
      const b = await r.json().catch(() => ({}));
      status.textContent = "Cancel: " + (b.status || r.status);
    } catch (e) { showError(out, e); }
  };
  const started = performance.now();
  let last = null;
  await streamStatus(path(sub.status_url) + "/stream?logs=1", signal, (ev) => {
    last = ev;
    if (ev.logs) for (const l of ev.logs) { logs.textContent += fmtLog(l) + "\n"; progressFrom(prog, l.message); }
    logs.scrollTop = logs.scrollHeight;
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    if (ev.status === "IN_QUEUE") status.textContent = `In queue (position ${ev.queue_position}) · ${secs} s`;
    else if (ev.status === "IN_PROGRESS") status.textContent = `Running · ${secs} s`;
    else if (ev.status === "COMPLETED") status.textContent = `Completed in ${secs} s` + (ev.metrics && ev.metrics.inference_time ? ` (inference ${ev.metrics.inference_time.toFixed(2)} s)` : "");
  });
  cancelBtn.disabled = true;
  prog.max = 1; prog.value = 1;
  if (!last || last.status !== "COMPLETED") throw new Error("the status stream ended before the request completed");
  if (last.error) {
    status.textContent = "Failed";
    out.append(el("div", { class: "error", role: "alert", id: "run-error", text: `${last.error_type || "error"}: ${last.error}` }));
    let body = null;
    try { await api(path(sub.response_url)); } catch (e) { body = e.body; }
    if (body) out.append(el("details", {}, el("summary", { text: "Error body" }), el("pre", { text: JSON.stringify(body, null, 2) })));
    out.append(codeView(id, input));
    return;
  }
  const result = await api(path(sub.response_url), { signal });
  out.append(resultView(id, input, result), codeView(id, input));
}

function progressFrom(prog, msg) {
  let m = /(\d+)\s*\/\s*(\d+)/.exec(msg);
  if (m && Number(m[2]) > 0 && Number(m[1]) <= Number(m[2])) { prog.max = Number(m[2]); prog.value = Number(m[1]); return; }
  m = /(\d+(?:\.\d+)?)\s*%/.exec(msg);
  if (m) { prog.max = 100; prog.value = Number(m[1]); }
}

// streamStatus reads the SSE status stream with fetch (EventSource cannot
// send the Authorization header); it reconnects once if the stream drops
// before COMPLETED.
async function streamStatus(url, signal, onEvent) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const res = await fetch(url, { headers: headers({ Accept: "text/event-stream" }), signal });
    if (!res.ok) throw new APIError(res.status, (await res.json().catch(() => ({}))).detail || res.statusText);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "", done = false;
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;
        const ev = JSON.parse(data);
        onEvent(ev);
        if (ev.status === "COMPLETED") done = true;
      }
    }
    if (done) return;
    url = url.replace(/logs=1/, "logs=0"); // logs already shown; only the state is missing
  }
}

// ---- results ----

function imageOf(out) {
  if (out && out.image && out.image.url) return out.image;
  return null;
}

function resultView(id, input, out) {
  const box = el("section", { class: "result", id: "result" }, el("h2", { text: "Result" }));
  const img = imageOf(out);
  const srcKey = input && (input.image_url !== undefined ? "image_url" : null);
  if (img && input && srcKey && input[srcKey]) {
    box.append(compareView(input[srcKey], img));
  } else if (img) {
    box.append(el("div", { class: "compare checker" }, el("img", { class: "result-image", src: img.url, alt: "Output image" })));
  }
  if (img) box.append(el("p", { class: "muted" }, `${img.width || "?"}×${img.height || "?"} · ${img.content_type || ""} · `, el("a", { href: img.url, download: img.file_name || "", text: "download" })));
  if (out && Array.isArray(out.images)) {
    box.append(el("div", { class: "grid" }, out.images.map((im, i) => el("figure", {},
      el("div", { class: "checker" }, el("img", { class: "result-image", src: im.url, alt: `Generated image ${i + 1}` })),
      el("figcaption", {}, `${im.width || "?"}×${im.height || "?"} · `, el("a", { href: im.url, download: im.file_name || "", text: "download" }))))));
    const meta = [];
    if (out.seed !== undefined) meta.push(`seed ${out.seed}`);
    if (out.timings) for (const [k, v] of Object.entries(out.timings)) meta.push(`${k} ${typeof v === "number" ? v.toFixed(2) + " s" : v}`);
    if (out.has_nsfw_concepts) meta.push(`nsfw flags ${JSON.stringify(out.has_nsfw_concepts)}`);
    if (meta.length) box.append(el("p", { class: "muted", id: "result-meta", text: meta.join(" · ") }));
  }
  if (out && out.audio && out.audio.url) {
    box.append(el("audio", { controls: true, src: out.audio.url, id: "result-audio", "aria-label": "Generated speech" }),
      el("p", {}, el("a", { href: out.audio.url, download: out.audio.file_name || "", text: "download audio" })));
  }
  if (out && typeof out.text === "string") {
    const audioURL = input && input.audio_url;
    const player = audioURL ? el("audio", { controls: true, src: audioURL, id: "result-audio", "aria-label": "Input audio" }) : null;
    if (player) box.append(player);
    const tr = el("div", { class: "transcript", id: "transcript" });
    if (Array.isArray(out.chunks) && out.chunks.length) {
      for (const c of out.chunks) {
        const [t0] = c.timestamp || [];
        const b = el("button", { type: "button", class: "chunk", title: player ? "Play from here" : "", "data-start": t0 },
          el("span", { class: "ts", text: fmtTime(t0) }), c.text);
        if (player && typeof t0 === "number") b.addEventListener("click", () => { player.currentTime = t0; player.play().catch(() => {}); });
        tr.append(b, " ");
      }
    } else tr.textContent = out.text;
    box.append(tr);
  }
  box.append(el("details", { id: "raw-json" }, el("summary", { text: "Raw JSON" }), el("pre", { text: JSON.stringify(out, null, 2) })));
  return box;
}

function fmtTime(t) {
  if (typeof t !== "number") return "";
  const m = Math.floor(t / 60), s = (t % 60).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}

// compareView shows the input over the output, cut at the slider: before on
// the left, after on the right.
function compareView(before, out) {
  const sid = uid("slider");
  const top = el("img", { class: "before", src: before, alt: "Input image" });
  const base = el("img", { class: "result-image", src: out.url, alt: "Output image" });
  const divider = el("div", { class: "divider" });
  const slider = el("input", { id: sid, type: "range", min: 0, max: 100, value: 50 });
  const set = () => { top.style.clipPath = `inset(0 ${100 - slider.value}% 0 0)`; divider.style.left = slider.value + "%"; };
  slider.addEventListener("input", set);
  set();
  return el("div", {}, el("div", { class: "compare checker" }, base, top, divider),
    el("div", { class: "slider" }, el("label", { for: sid, text: "Before / after" }), slider));
}

// ---- code ----

function codeView(id, input) {
  // data: URIs can be megabytes: the snippets show them shortened.
  const shown = JSON.parse(JSON.stringify(input, (k, v) => (typeof v === "string" && v.startsWith("data:") && v.length > 120 ? v.slice(0, 60) + "…" : v)));
  const json = JSON.stringify(shown, null, 2);
  const js = `import { fal } from "@fal-ai/client";

fal.config({ proxyUrl: { url: "${BASE}/fal/proxy", when: "always" } });

const result = await fal.subscribe("${id}", {
  input: ${json.replace(/\n/g, "\n  ")},
  logs: true,
});
console.log(result.data);`;
  const py = `# export HTTPS_PROXY=${BASE}
# curl -so falocal-ca.pem ${BASE}/ca.pem && export SSL_CERT_FILE=$PWD/falocal-ca.pem
# export FAL_KEY=${getKey() ? "<your key_id:key_secret>" : "local:local"}
import fal_client

result = fal_client.subscribe(
    "${id}",
    arguments=${pyLiteral(shown, "    ")},
    with_logs=True,
)
print(result)`;
  const auth = getKey() ? ` \\\n  -H "Authorization: Key $FAL_KEY"` : "";
  const curl = `cat > request.json <<'EOF'
${json}
EOF
curl -s ${BASE}/${id} -H 'Content-Type: application/json'${auth} \\
  --data @request.json
# {"request_id": …, "status_url": …, "response_url": …}: poll status_url, then GET response_url
# or, waiting for the result in one call:
curl -s ${BASE}/run/${id} -H 'Content-Type: application/json'${auth} \\
  --data @request.json`;
  const tabs = [["JavaScript", js], ["Python", py], ["curl", curl]];
  const pre = el("pre", { id: "code", tabindex: 0 });
  const bar = el("div", { class: "tabs", role: "tablist", "aria-label": "Client code" });
  const pick = (i) => {
    pre.textContent = tabs[i][1];
    for (const [j, b] of [...bar.children].entries()) b.setAttribute("aria-selected", String(i === j));
  };
  tabs.forEach(([name], i) => bar.append(el("button", { type: "button", role: "tab", onclick: () => pick(i), text: name })));
  const copy = el("button", { type: "button", text: "Copy", onclick: () => navigator.clipboard && navigator.clipboard.writeText(pre.textContent).catch(() => {}) });
  pick(0);
  return el("section", { class: "code" }, el("div", { class: "codehead" }, el("h2", { text: "The same request in code" }), copy), bar, pre);
}

function pyLiteral(v, indent) {
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return String(v);
  if (typeof v === "string") return JSON.stringify(v);
  const next = indent + "    ";
  if (Array.isArray(v)) return v.length ? "[\n" + v.map((x) => next + pyLiteral(x, next)).join(",\n") + ",\n" + indent + "]" : "[]";
  const ks = Object.keys(v);
  return ks.length ? "{\n" + ks.map((k) => next + JSON.stringify(k) + ": " + pyLiteral(v[k], next)).join(",\n") + ",\n" + indent + "}" : "{}";
}
