// The real @fal-ai/client, configured as a user would for falocal (the proxy
// convention), against a running server. tests/clients/clients_test.go runs
// this with `node --test` and sets:
//   FALOCAL_BASE          the server's base URL (started with --workers 1)
//   FALOCAL_NODE_MODULES  where the locked packages are installed
//   FALOCAL_CLIENT_ASSETS JSON {name: {path, width, height}} of test photos
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { inflateSync } from "node:zlib";

const base = process.env.FALOCAL_BASE;
const modules = process.env.FALOCAL_NODE_MODULES;
const assets = JSON.parse(process.env.FALOCAL_CLIENT_ASSETS ?? "{}");
if (!base || !modules) {
  throw new Error("FALOCAL_BASE and FALOCAL_NODE_MODULES must be set (run through go test ./tests/clients/)");
}
const require = createRequire(join(dirname(modules), "index.js"));
const { fal, ApiError, ValidationError } = require("@fal-ai/client");

fal.config({
  credentials: "local:local",
  proxyUrl: { url: `${base}/fal/proxy`, when: "always" },
});

const photo = (name) => {
  const a = assets[name];
  assert.ok(a, `test photo ${name} not passed in FALOCAL_CLIENT_ASSETS`);
  return { ...a, bytes: readFileSync(a.path) };
};
const mime = (name) => (name.endsWith(".jpg") ? "image/jpeg" : "image/png");
const dataUri = (name) => `data:${mime(name)};base64,${photo(name).bytes.toString("base64")}`;

// decodePNG checks a PNG's structure and that its pixel data inflates to
// exactly the size its header claims; it returns the header's size.
function decodePNG(buf) {
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.ok(buf.subarray(0, 8).equals(sig), "not a PNG");
  let off = 8;
  let ihdr;
  const idat = [];
  let ended = false;
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString("latin1", off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    assert.equal(data.length, len, `truncated ${type} chunk`);
    if (type === "IHDR") ihdr = data;
    if (type === "IDAT") idat.push(data);
    off += 12 + len;
    if (type === "IEND") {
      ended = true;
      break;
    }
  }
  assert.ok(ihdr && ended && idat.length > 0, "PNG lacks IHDR, IDAT or IEND");
  const width = ihdr.readUInt32BE(0);
  const height = ihdr.readUInt32BE(4);
  const depth = ihdr[8];
  const channels = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[ihdr[9]];
  assert.ok(channels, `PNG colour type ${ihdr[9]}`);
  const pixels = inflateSync(Buffer.concat(idat));
  if (ihdr[12] === 0) {
    const row = 1 + Math.ceil((width * channels * depth) / 8);
    assert.equal(pixels.length, row * height, "PNG pixel data does not match its size");
  }
  return { width, height };
}

// checkImage fetches an output file and checks it is a PNG of the given size.
async function checkImage(file, want) {
  assert.ok(file && typeof file.url === "string", `no image in ${JSON.stringify(file)}`);
  assert.equal(file.content_type, "image/png");
  assert.equal(file.width, want.width);
  assert.equal(file.height, want.height);
  const res = await fetch(file.url);
  assert.equal(res.status, 200, `GET ${file.url}`);
  const body = Buffer.from(await res.arrayBuffer());
  if (file.file_size !== undefined) assert.equal(body.length, file.file_size);
  const size = decodePNG(body);
  assert.deepEqual(size, { width: want.width, height: want.height });
}

const logsOf = (s) => (Array.isArray(s.logs) ? s.logs : []);

test("the pinned client is installed", () => {
  const pkg = JSON.parse(readFileSync(join(modules, "@fal-ai", "client", "package.json"), "utf8"));
  assert.equal(pkg.version, "1.10.1");
});

test("subscribe with logs and onQueueUpdate", async () => {
  const astronaut = photo("astronaut.png");
  const updates = [];
  const { data, requestId } = await fal.subscribe("fal-ai/imageutils/rembg", {
    input: { image_url: dataUri("astronaut.png") },
    logs: true,
    pollInterval: 100,
    onQueueUpdate: (u) => updates.push(u),
  });
  assert.match(requestId, /\S/);
  const statuses = updates.map((u) => u.status);
  assert.ok(statuses.includes("IN_PROGRESS"), `updates: ${statuses}`);
  assert.equal(statuses.at(-1), "COMPLETED");
  assert.ok(updates.every((u) => u.request_id === requestId));
  const logs = updates.flatMap(logsOf);
  assert.ok(logs.length > 0, "no logs in any update");
  for (const l of logs) {
    assert.equal(typeof l.message, "string");
    assert.equal(typeof l.timestamp, "string");
  }
  await checkImage(data.image, astronaut);
});

test("queue: submit, status with logs, result; cancel of a queued request", async () => {
  const chelsea = photo("chelsea.png");
  // One worker: the first request runs, the second waits in the queue.
  const first = await fal.queue.submit("fal-ai/birefnet/v2", {
    input: { image_url: dataUri("chelsea.png"), output_mask: true },
  });
  assert.equal(first.status, "IN_QUEUE");
  assert.match(first.request_id, /\S/);
  const second = await fal.queue.submit("fal-ai/imageutils/rembg", {
    input: { image_url: dataUri("astronaut.png") },
  });
  assert.notEqual(second.request_id, first.request_id);

  const queued = await fal.queue.status("fal-ai/imageutils/rembg", { requestId: second.request_id });
  assert.equal(queued.status, "IN_QUEUE", JSON.stringify(queued));
  assert.equal(typeof queued.queue_position, "number");
  await fal.queue.cancel("fal-ai/imageutils/rembg", { requestId: second.request_id });
  const cancelled = await fal.queue.subscribeToStatus("fal-ai/imageutils/rembg", {
    requestId: second.request_id,
    pollInterval: 100,
  });
  assert.equal(cancelled.status, "COMPLETED");
  await assert.rejects(
    fal.queue.result("fal-ai/imageutils/rembg", { requestId: second.request_id }),
    (err) => {
      assert.ok(err instanceof ApiError, `${err}`);
      assert.equal(err.status, 499);
      return true;
    },
  );

  const now = await fal.queue.status("fal-ai/birefnet/v2", { requestId: first.request_id, logs: true });
  assert.ok(["IN_QUEUE", "IN_PROGRESS", "COMPLETED"].includes(now.status), JSON.stringify(now));
  assert.ok(Array.isArray(now.logs), "status with logs has a logs array");
  const done = await fal.queue.subscribeToStatus("fal-ai/birefnet/v2", {
    requestId: first.request_id,
    logs: true,
    pollInterval: 100,
  });
  assert.equal(done.status, "COMPLETED");
  assert.ok(logsOf(done).length > 0, "COMPLETED status with logs has none");
  assert.equal(done.error, undefined);
  const { data, requestId } = await fal.queue.result("fal-ai/birefnet/v2", { requestId: first.request_id });
  assert.equal(requestId, first.request_id);
  await checkImage(data.image, chelsea);
  await checkImage(data.mask_image, chelsea);
});

test("streamStatus with logs; done() resolves to COMPLETED", async () => {
  const coffee = photo("coffee.png");
  const { request_id } = await fal.queue.submit("fal-ai/birefnet", {
    input: { image_url: dataUri("coffee.png") },
  });
  const stream = await fal.queue.streamStatus("fal-ai/birefnet", { requestId: request_id, logs: true });
  const events = [];
  stream.on("data", (e) => events.push(e));
  const done = await stream.done();
  assert.equal(done.status, "COMPLETED");
  assert.equal(done.request_id, request_id);
  assert.ok(events.length > 0, "no events");
  assert.equal(events.at(-1).status, "COMPLETED");
  assert.ok(events.flatMap(logsOf).length > 0, "no logs in the stream");
  const { data } = await fal.queue.result("fal-ai/birefnet", { requestId: request_id });
  await checkImage(data.image, coffee);
});

test("storage.upload of a photo, then run with its URL (requestId set)", async () => {
  const rocket = photo("rocket.jpg");
  const url = await fal.storage.upload(new Blob([rocket.bytes], { type: "image/jpeg" }));
  assert.match(url, /^https?:\/\//);
  const got = await fetch(url);
  assert.equal(got.status, 200, `GET ${url}`);
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(rocket.bytes), "uploaded file differs");

  const { data, requestId } = await fal.run("fal-ai/imageutils/rembg", { input: { image_url: url } });
  assert.match(requestId, /\S/);
  await checkImage(data.image, rocket);
});

test("422: ValidationError with fieldErrors", async () => {
  await assert.rejects(
    fal.run("fal-ai/birefnet", { input: { image_url: dataUri("astronaut.png"), output_format: "bmp" } }),
    (err) => {
      assert.ok(err instanceof ValidationError, `${err}`);
      assert.equal(err.status, 422);
      const fe = err.getFieldErrors("output_format");
      assert.equal(fe.length, 1, JSON.stringify(err.body));
      assert.equal(typeof fe[0].msg, "string");
      assert.equal(typeof fe[0].type, "string");
      assert.deepEqual(fe[0].loc, ["body", "output_format"]);
      return true;
    },
  );
});

test("unknown endpoint: 404", async () => {
  await assert.rejects(
    fal.run("fal-ai/no-such-model", { input: { prompt: "x" } }),
    (err) => {
      assert.ok(err instanceof ApiError, `${err}`);
      assert.ok(!(err instanceof ValidationError));
      assert.equal(err.status, 404);
      return true;
    },
  );
});
