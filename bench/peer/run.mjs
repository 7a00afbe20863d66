// Peer for falbench's compare mode: @imgly/background-removal-node (ISNet
// "medium" = the fp16 isnet-general-use weights, on onnxruntime-node) in one
// process. Reads a JSON job on argv[2]:
//   {"images": ["/abs/a.png", ...], "count": N, "concurrency": C, "warmup": W}
// runs W un-timed warm-up images (after a timed first "cold" image), then N
// images (cycling through the list) with C in flight at once, and prints one
// JSON object on stdout:
//   {"cold_ms": x, "latencies_ms": [...], "wall_ms": y, "config": {...}}
// Every image is read into memory before timing; a latency is one
// removeBackground call, PNG bytes in to PNG bytes out.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { pathToFileURL } from "node:url";
import { removeBackground } from "@imgly/background-removal-node";

const job = JSON.parse(process.argv[2] ?? "{}");
const images = (job.images ?? []).map((p) => readFileSync(p));
if (images.length === 0) {
  console.error("run.mjs: no images");
  process.exit(2);
}
const count = job.count ?? images.length;
const concurrency = Math.max(1, job.concurrency ?? 1);
const warmup = job.warmup ?? 1;

// The package's own dist/ holds resources.json and the model chunks: load
// them from there (file://), never from the network.
const require = createRequire(import.meta.url);
const dist = dirname(require.resolve("@imgly/background-removal-node"));
const config = {
  publicPath: pathToFileURL(dist).href + "/",
  model: "medium",
  output: { format: "image/png", quality: 0.8 },
};

const blob = (buf) => new Blob([buf], { type: "image/png" });
const once = async (buf) => {
  const out = await removeBackground(blob(buf), config);
  if (!out || out.size === 0) throw new Error("empty output");
  return out;
};

let t = performance.now();
await once(images[0]);
const coldMs = performance.now() - t;
for (let i = 0; i < warmup; i++) await once(images[i % images.length]);

const latencies = new Array(count);
let next = 0;
const start = performance.now();
const worker = async () => {
  for (;;) {
    const i = next++;
    if (i >= count) return;
    const t0 = performance.now();
    await once(images[i % images.length]);
    latencies[i] = performance.now() - t0;
  }
};
await Promise.all(Array.from({ length: concurrency }, worker));
const wallMs = performance.now() - start;

process.stdout.write(JSON.stringify({
  cold_ms: coldMs,
  latencies_ms: latencies,
  wall_ms: wallMs,
  config: { package: "@imgly/background-removal-node@1.4.5", model: config.model, format: config.output.format, publicPath: config.publicPath, node: process.version },
}) + "\n");
