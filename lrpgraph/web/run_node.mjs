// Runs an explainer with onnxruntime-web (wasm backend) in Node, for tools/runtimes.py.
// usage: node run_node.mjs MODEL.onnx FOLDER THREADS ROUNDS
// FOLDER/feeds.json names the inputs (file, dtype, dims, raw little-endian data beside it);
// writes FOLDER/out_<name>.bin and FOLDER/result.json (output dims, seconds per run).
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const ort = require("onnxruntime-web");
const [model, folder, threads, rounds] = process.argv.slice(2);
ort.env.wasm.numThreads = Number(threads);

const types = { float32: Float32Array, int64: BigInt64Array };
const feeds = {};
for (const f of JSON.parse(readFileSync(join(folder, "feeds.json"), "utf8"))) {
  const bytes = readFileSync(join(folder, f.file));
  const data = new types[f.dtype](bytes.buffer, bytes.byteOffset, bytes.byteLength / types[f.dtype].BYTES_PER_ELEMENT);
  feeds[f.name] = new ort.Tensor(f.dtype, data, f.dims);
}
const session = await ort.InferenceSession.create(readFileSync(model), { executionProviders: ["wasm"] });
let out = await session.run(feeds);  // the first run also warms the kernels up
const seconds = [];
for (let i = 0; i < Number(rounds); i++) {
  const t = process.hrtime.bigint();
  out = await session.run(feeds);
  seconds.push(Number(process.hrtime.bigint() - t) / 1e9);
}
const result = { seconds, outputs: {} };
for (const [name, tensor] of Object.entries(out)) {
  const file = `out_${name.replace(/[^A-Za-z0-9_.-]/g, "_")}.bin`;
  writeFileSync(join(folder, file), Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
  result.outputs[name] = { file, dtype: tensor.type, dims: tensor.dims };
}
writeFileSync(join(folder, "result.json"), JSON.stringify(result));
