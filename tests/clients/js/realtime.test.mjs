// The real @fal-ai/client's fal.realtime.connect against a falocal server
// that serves fal-ai/fast-turbo-diffusion with a tiny SD-Turbo test model.
// The client fetches its token through the /fal/proxy route, as every other
// call; its WebSocket URL (wss://fal.run/…, which the client builds itself)
// is pointed at the server by replacing globalThis.WebSocket with a subclass
// that rewrites it, as docs/protocol.md tells users to. Run by
// tests/clients/clients_test.go with FALOCAL_BASE and FALOCAL_NODE_MODULES
// (Node 20 needs --experimental-websocket for its WebSocket).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const base = process.env.FALOCAL_BASE;
const modules = process.env.FALOCAL_NODE_MODULES;
if (!base || !modules) {
  throw new Error("FALOCAL_BASE and FALOCAL_NODE_MODULES must be set (run through go test ./tests/clients/)");
}
if (typeof globalThis.WebSocket !== "function") {
  throw new Error("this Node has no global WebSocket: run it with --experimental-websocket (Node 20, 21)");
}
const require = createRequire(join(dirname(modules), "index.js"));
const { fal, ApiError } = require("@fal-ai/client");
fal.config({ credentials: "local:local", proxyUrl: { url: `${base}/fal/proxy`, when: "always" } });

const wsBase = base.replace(/^http/, "ws") + "/run/";
const NativeWebSocket = globalThis.WebSocket;
globalThis.WebSocket = class extends NativeWebSocket {
  constructor(url, protocols) {
    super(String(url).replace(/^wss:\/\/fal\.run\//, wsBase), protocols);
  }
};

const input = { model_name: "stabilityai/sd-turbo", image_size: { width: 64, height: 64 }, num_inference_steps: 1 };

// connect opens app and collects what arrives; next() waits for the
// next result or error.
const connect = (app) => {
  const arrived = [];
  let wake = () => {};
  const push = (x) => {
    arrived.push(x);
    wake();
  };
  const conn = fal.realtime.connect(app, {
    throttleInterval: 0,
    tokenProvider: async (appPath) => {
      // What a user's backend does: POST rest.fal.ai/tokens/ with the key.
      assert.equal(appPath, `${app}/realtime`);
      const res = await fetch(`${base}/fal/proxy`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-fal-target-url": "https://rest.fal.ai/tokens/", authorization: "Key local:local" },
        body: JSON.stringify({ allowed_apps: [app.split("/")[1]], token_expiration: 120 }),
      });
      assert.equal(res.status, 200);
      return res.json();
    },
    onResult: (r) => push({ result: r }),
    onError: (e) => push({ error: e }),
  });
  const next = async (ms = 120000) => {
    const deadline = Date.now() + ms;
    while (arrived.length === 0) {
      if (Date.now() > deadline) throw new Error("nothing arrived");
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, 200);
      });
    }
    return arrived.shift();
  };
  return { conn, next };
};

test("fast-turbo-diffusion: each input gets its image, request_id echoed", async () => {
  const { conn, next } = connect("fal-ai/fast-turbo-diffusion");
  try {
    conn.send({ ...input, prompt: "a red apple", seed: 7, request_id: "first" });
    let got = await next();
    assert.ok(got.result, got.error?.message);
    const r = got.result;
    assert.equal(r.request_id, "first");
    assert.equal(r.seed, 7);
    assert.equal(r.images.length, 1);
    const img = r.images[0];
    assert.equal(img.width, 64);
    assert.equal(img.height, 64);
    assert.equal(img.content_type, "image/jpeg");
    assert.ok(img.url.startsWith("data:image/jpeg;base64,"), img.url.slice(0, 40));
    const jpeg = Buffer.from(img.url.slice(img.url.indexOf(",") + 1), "base64");
    assert.equal(jpeg.readUInt16BE(0), 0xffd8);
    assert.equal(jpeg.length, img.file_size);

    conn.send({ ...input, prompt: "a green pear", request_id: "second" });
    got = await next();
    assert.ok(got.result, got.error?.message);
    assert.equal(got.result.request_id, "second");
  } finally {
    conn.close();
  }
});

test("fast-turbo-diffusion: an invalid input is an ApiError, the connection goes on", async () => {
  const { conn, next } = connect("fal-ai/fast-turbo-diffusion");
  try {
    conn.send({ ...input, prompt: "", request_id: "bad" });
    let got = await next();
    assert.ok(got.error instanceof ApiError, String(got.result && JSON.stringify(got.result)));
    assert.equal(got.error.status, 400);
    assert.match(got.error.message, /^VALIDATION_ERROR: prompt: /);
    assert.equal(got.error.body.request_id, "bad");
    assert.ok(Array.isArray(got.error.body.detail));

    conn.send({ ...input, prompt: "still here" });
    got = await next();
    assert.ok(got.result, got.error?.message);
    assert.equal(got.result.images.length, 1);
  } finally {
    conn.close();
  }
});

test("an endpoint without realtime says so", async () => {
  const { conn, next } = connect("fal-ai/fast-sdxl");
  try {
    conn.send({ prompt: "x" });
    const got = await next();
    assert.ok(got.error instanceof ApiError);
    assert.match(got.error.message, /^NOT_REALTIME: 'fal-ai\/fast-sdxl' has no realtime endpoint/);
    const closed = await next();
    assert.equal(closed.error.status, 1008);
    assert.match(closed.error.message, /has no realtime endpoint/);
  } finally {
    conn.close();
  }
});
