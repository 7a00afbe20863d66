// An older @fal-ai/client (1.2.3, locked in package-lock.json) against a
// running server. Clients 1.0.2–1.9.x send uploads and tokens to
// https://rest.alpha.fal.ai (not rest.fal.ai) and ignore proxyUrl outside
// browsers, so in Node they reach falocal only through requestMiddleware,
// configured here exactly as README.md and docs/protocol.md give it.
//
// Every request goes through a fetch that refuses any origin but the
// server's: a URL left pointing at fal (an upload to rest.alpha.fal.ai, a
// file URL on fal's CDN) fails the test instead of leaving the machine.
// tests/clients/clients_test.go runs this with `node --test` and sets:
//   FALOCAL_BASE           the server's base URL
//   FALOCAL_OLD_MODULES    where this folder's locked packages are installed
//   FALOCAL_CLIENT_ASSETS  JSON {name: {path, width, height}} of test photos
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createHash } from "node:crypto";

const base = process.env.FALOCAL_BASE;
const modules = process.env.FALOCAL_OLD_MODULES;
const assets = JSON.parse(process.env.FALOCAL_CLIENT_ASSETS ?? "{}");
if (!base || !modules) {
  throw new Error("FALOCAL_BASE and FALOCAL_OLD_MODULES must be set (run through go test ./tests/clients/)");
}
const require = createRequire(join(dirname(modules), "index.js"));
const { fal } = require("@fal-ai/client");
const local = new URL(base).origin;

// Every URL the client asked for, and those that were not this server.
const seen = [];
const leaked = [];
const guardedFetch = (input, init) => {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  seen.push(url);
  if (new URL(url).origin !== local) {
    leaked.push(url);
    return Promise.reject(new Error(`the client sent a request to ${url}, not to falocal`));
  }
  return fetch(input, init);
};

// The documented configuration (README.md, docs/protocol.md), with
// LOCAL = the test server's base URL.
const LOCAL = base;
fal.config({
  credentials: "local:local",
  fetch: guardedFetch,
  requestMiddleware: async (req) => ({
    ...req,
    url: req.url
      .replace(/^https:\/\/queue\.fal\.run(?=[/?]|$)/, LOCAL)
      .replace(/^https:\/\/fal\.run(?=[/?]|$)/, `${LOCAL}/run`)
      .replace(/^https:\/\/rest(\.alpha)?\.fal\.ai(?=[/?]|$)/, `${LOCAL}/rest`),
  }),
});

const REMBG = "fal-ai/imageutils/rembg";

const photo = (name) => {
  const a = assets[name];
  assert.ok(a, `test photo ${name} not passed in FALOCAL_CLIENT_ASSETS`);
  return { ...a, bytes: readFileSync(a.path) };
};

const sha256 = (b) => createHash("sha256").update(b).digest("hex");

// get fetches a URL the server handed out, which must be its own.
async function get(url) {
  assert.ok(url.startsWith(`${local}/`), `${url} is not a URL of this server`);
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}`);
  return Buffer.from(await res.arrayBuffer());
}

async function checkCutout(image, want) {
  assert.ok(image && typeof image.url === "string", `no image in ${JSON.stringify(image)}`);
  assert.equal(image.content_type, "image/png");
  assert.equal(image.width, want.width);
  assert.equal(image.height, want.height);
  const png = await get(image.url);
  assert.equal(png.subarray(1, 4).toString("latin1"), "PNG");
}

test("the locked client is 1.2.x, whose REST host is rest.alpha.fal.ai", () => {
  const pkg = JSON.parse(readFileSync(join(modules, "@fal-ai", "client", "package.json"), "utf8"));
  assert.match(pkg.version, /^1\.2\./);
  const config = readFileSync(join(modules, "@fal-ai", "client", "src", "config.js"), "utf8");
  assert.match(config, /https:\/\/rest\.alpha\.fal\.ai/);
});

let uploaded;

test("storage.upload stores the file on this server, then a sync run reads it", async () => {
  const rocket = photo("rocket.jpg");
  uploaded = await fal.storage.upload(new Blob([rocket.bytes], { type: "image/jpeg" }));
  assert.ok(uploaded.startsWith(`${local}/cdn/files/`), `upload URL ${uploaded}`);
  assert.equal(sha256(await get(uploaded)), sha256(rocket.bytes), "uploaded file differs");
  assert.ok(
    seen.some((u) => u.startsWith(`${local}/rest/storage/upload/initiate`)),
    `no upload was initiated through /rest: ${seen.join(", ")}`,
  );

  const { data } = await fal.run(REMBG, { input: { image_url: uploaded } });
  await checkCutout(data.image, rocket);
});

test("a Blob in the input is uploaded here and the queue runs it (subscribe)", async () => {
  const chelsea = photo("chelsea.png");
  const updates = [];
  const { data, requestId } = await fal.subscribe(REMBG, {
    input: { image_url: new Blob([chelsea.bytes], { type: "image/png" }) },
    logs: true,
    onQueueUpdate: (u) => updates.push(u.status),
  });
  assert.ok(requestId, "no request id");
  assert.ok(updates.length > 0, "no queue updates");
  await checkCutout(data.image, chelsea);
  const status = await fal.queue.status(REMBG, { requestId, logs: true });
  assert.equal(status.status, "COMPLETED");
});

test("a multipart upload (over 90 MiB) goes to this server too", async () => {
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24;
  const parts = [];
  for (let i = 0; i < 91; i++) parts.push(chunk);
  parts.push(Buffer.from("tail"));
  const blob = new Blob(parts, { type: "application/octet-stream" });
  const url = await fal.storage.upload(blob);
  assert.ok(url.startsWith(`${local}/cdn/files/`), `upload URL ${url}`);
  const got = await get(url);
  assert.equal(got.length, blob.size);
  assert.equal(sha256(got), sha256(Buffer.concat(parts)), "uploaded file differs");
  assert.ok(
    seen.some((u) => u.startsWith(`${local}/rest/storage/upload/initiate-multipart`)),
    `no multipart upload was initiated through /rest: ${seen.join(", ")}`,
  );
});

test("no request was addressed to fal's hosts", () => {
  // Checked last: even where the client swallowed an error, nothing may
  // have gone elsewhere.
  assert.deepEqual(leaked, [], `requests meant for fal's hosts: ${leaked.join(", ")}`);
  assert.ok(seen.length > 0, "the client made no request");
});
