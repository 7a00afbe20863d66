// The real @fal-ai/client against a falocal server speaking with the Kokoro
// model setup installs (kokoro-v1.0) and espeak-ng: subscribe with logs,
// fal.stream with one partial output per chunk, and a 422. Run by
// tests/clients/clients_test.go with FALOCAL_BASE and FALOCAL_NODE_MODULES.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const base = process.env.FALOCAL_BASE;
const modules = process.env.FALOCAL_NODE_MODULES;
if (!base || !modules) {
  throw new Error("FALOCAL_BASE and FALOCAL_NODE_MODULES must be set (run through go test ./tests/clients/)");
}
const require = createRequire(join(dirname(modules), "index.js"));
const { fal, ValidationError } = require("@fal-ai/client");
fal.config({ credentials: "local:local", proxyUrl: { url: `${base}/fal/proxy`, when: "always" } });

// checkWAV reads a 16-bit mono 24 kHz WAV and returns its duration in seconds.
const checkWAV = (buf) => {
  assert.equal(buf.toString("ascii", 0, 4), "RIFF");
  assert.equal(buf.toString("ascii", 8, 16), "WAVEfmt ");
  assert.equal(buf.readUInt16LE(22), 1);
  assert.equal(buf.readUInt32LE(24), 24000);
  assert.equal(buf.readUInt16LE(34), 16);
  return buf.readUInt32LE(40) / 2 / 24000;
};

test("kokoro/american-english: subscribe gives fal's audio File, logs per chunk", async () => {
  const logs = [];
  const { data, requestId } = await fal.subscribe("fal-ai/kokoro/american-english", {
    input: { prompt: "Hello from a local Kokoro server." },
    logs: true,
    onQueueUpdate: (u) => logs.push(...(u.logs ?? []).map((l) => l.message)),
  });
  assert.ok(requestId);
  assert.deepEqual(Object.keys(data), ["audio"]);
  assert.equal(data.audio.content_type, "audio/wav");
  assert.ok(data.audio.file_name.endsWith(".wav"));
  const res = await fetch(data.audio.url);
  assert.equal(res.status, 200);
  const buf = Buffer.from(await res.arrayBuffer());
  assert.equal(buf.length, data.audio.file_size);
  const secs = checkWAV(buf);
  assert.ok(secs > 1 && secs < 6, `${secs} s`);
  assert.ok(logs.some((m) => m.startsWith("chunk 1/1")), logs.join("\n"));
});

test("kokoro/british-english: fal.stream yields each chunk as a WAV data URI, then the output", async () => {
  const prompt = "The birch canoe slid on the smooth planks, and the boy was there when the sun rose. ".repeat(7);
  const stream = await fal.stream("fal-ai/kokoro/british-english", { input: { prompt, voice: "bm_george", speed: 1.3 } });
  const events = [];
  for await (const ev of stream) events.push(ev);
  const done = await stream.done();
  const partials = events.filter((e) => e.audio.url.startsWith("data:audio/wav;base64,"));
  assert.ok(partials.length >= 2, `${partials.length} partial outputs`);
  let total = 0;
  for (const p of partials) {
    const buf = Buffer.from(p.audio.url.slice("data:audio/wav;base64,".length), "base64");
    assert.equal(buf.length, p.audio.file_size);
    total += checkWAV(buf);
  }
  const res = await fetch(done.audio.url);
  const whole = checkWAV(Buffer.from(await res.arrayBuffer()));
  assert.ok(Math.abs(whole - total) < 0.001, `final ${whole} s, chunks ${total} s`);
});

test("kokoro: a voice of another language is a 422 naming voice", async () => {
  await assert.rejects(
    fal.subscribe("fal-ai/kokoro/american-english", { input: { prompt: "hi", voice: "bf_emma" } }),
    (e) => e instanceof ValidationError && e.status === 422 && e.fieldErrors.some((f) => f.loc.includes("voice")),
  );
});
