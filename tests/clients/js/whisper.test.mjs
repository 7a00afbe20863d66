// The real @fal-ai/client against a falocal server serving Whisper from the
// tiny random-weight test model: the protocol and the output shapes are
// checked (the text is meaningless). Run by tests/clients/clients_test.go with
// FALOCAL_BASE, FALOCAL_NODE_MODULES and FALOCAL_WHISPER_AUDIO (jfk.wav).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";

const base = process.env.FALOCAL_BASE;
const modules = process.env.FALOCAL_NODE_MODULES;
const audio = process.env.FALOCAL_WHISPER_AUDIO;
if (!base || !modules || !audio) {
  throw new Error("FALOCAL_BASE, FALOCAL_NODE_MODULES and FALOCAL_WHISPER_AUDIO must be set (run through go test ./tests/clients/)");
}
const require = createRequire(join(dirname(modules), "index.js"));
const { fal, ValidationError } = require("@fal-ai/client");
fal.config({ credentials: "local:local", proxyUrl: { url: `${base}/fal/proxy`, when: "always" } });

const checkChunks = (chunks) => {
  assert.ok(Array.isArray(chunks));
  for (const c of chunks) {
    const [start, end] = c.timestamp;
    assert.ok(start >= 0 && start <= end && end <= 11.01, JSON.stringify(c));
    assert.equal(typeof c.text, "string");
  }
};

test("wizper: a Blob input is uploaded by the client, logs stream", async () => {
  const logs = [];
  const { data, requestId } = await fal.subscribe("fal-ai/wizper", {
    input: { audio_url: new Blob([readFileSync(audio)], { type: "audio/wav" }) },
    logs: true,
    onQueueUpdate: (u) => logs.push(...(u.logs ?? []).map((l) => l.message)),
  });
  assert.ok(requestId);
  assert.deepEqual(Object.keys(data).sort(), ["chunks", "languages", "text"]);
  assert.ok(data.text.length > 0);
  assert.deepEqual(data.languages, ["en"]);
  checkChunks(data.chunks);
  assert.ok(logs.some((m) => m.includes("audio:")), logs.join("\n"));
});

test("whisper: translate with chunk_level none gives one chunk", async () => {
  const b64 = readFileSync(audio).toString("base64");
  const { data } = await fal.subscribe("fal-ai/whisper", {
    input: { audio_url: `data:audio/wav;base64,${b64}`, task: "translate", chunk_level: "none", language: "de" },
  });
  assert.ok(data.chunks.length <= 1);
  checkChunks(data.chunks);
  assert.deepEqual(data.inferred_languages, ["de"]);
});

test("whisper: word-level chunks are a 422 naming chunk_level", async () => {
  await assert.rejects(
    fal.subscribe("fal-ai/whisper", { input: { audio_url: "data:audio/wav;base64,AAAA", chunk_level: "word" } }),
    (e) => e instanceof ValidationError && e.status === 422 && e.fieldErrors.some((f) => f.loc.includes("chunk_level")),
  );
});

test("flux/schnell: subscribe gives fal's image output (tiny test model)", async () => {
  const { data } = await fal.subscribe("fal-ai/flux/schnell", {
    input: { prompt: "a red cube", image_size: { width: 64, height: 64 }, num_inference_steps: 2, seed: 5 },
  });
  assert.equal(data.images.length, 1);
  assert.equal(data.seed, 5);
  assert.deepEqual(data.has_nsfw_concepts, [false]);
  const img = await fetch(data.images[0].url);
  assert.equal(img.status, 200);
  assert.equal(img.headers.get("content-type"), "image/jpeg");
});

test("flux/schnell: fal.stream yields a preview per step, then the output", async () => {
  const stream = await fal.stream("fal-ai/flux/schnell", {
    input: { prompt: "a red cube", image_size: { width: 64, height: 64 }, num_inference_steps: 3, seed: 5, sync_mode: true },
  });
  const events = [];
  for await (const ev of stream) events.push(ev);
  const done = await stream.done();
  assert.equal(events.length, 3); // two previews, then the full output
  assert.ok(events[0].images[0].url.startsWith("data:image/jpeg;base64,"));
  assert.equal(done.seed, 5);
  assert.deepEqual(done, events[2]);
});
