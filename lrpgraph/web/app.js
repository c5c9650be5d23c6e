// lrpgraph's page: explain a photo with onnxruntime-web, on this machine. The explainer
// (built by `lrpgraph build`) returns logits and the relevance map in one run; this page
// preprocesses the photo as the explainer's metadata says (Pillow's bilinear resize, centre
// crop, mean/std), shows the top 5, and draws the map as lrpgraph's Python side does.
// window.lrpgraph holds the state and the last result for tests and curious users.

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const state = { ready: false, busy: false, error: null, last: null, backend: null, threads: null };
window.lrpgraph = state;

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
  if (error) state.error = text;
}

async function fetchWithProgress(url, label) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const total = Number(response.headers.get("Content-Length")) || 0;
  const reader = response.body.getReader();
  const parts = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    got += value.length;
    status(`${label}: ${(got / 1e6).toFixed(1)}${total ? ` of ${(total / 1e6).toFixed(1)}` : ""} MB`);
  }
  const bytes = new Uint8Array(got);
  let at = 0;
  for (const p of parts) { bytes.set(p, at); at += p.length; }
  return bytes;
}

// ---- preprocessing: Pillow's Image.resize(BILINEAR) on 8-bit RGB, bit for bit ----------
const PRECISION_BITS = 32 - 8 - 2;

function coefficients(inSize, outSize) {
  // Pillow's precompute_coeffs + normalize_coeffs_8bpc for the triangle filter
  const scale = inSize / outSize, filterscale = Math.max(scale, 1), support = filterscale;
  const rows = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale, ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const w = [];
    let total = 0;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      const v = t < 1 ? 1 - t : 0;
      w.push(v); total += v;
    }
    const k = w.map((v) => { const f = total ? v / total : 0; return Math.trunc(f < 0 ? -0.5 + f * (1 << PRECISION_BITS) : 0.5 + f * (1 << PRECISION_BITS)); });
    rows.push({ xmin, k });
  }
  return rows;
}

function clip8(v) {
  const r = Math.floor(v / (1 << PRECISION_BITS));
  return r < 0 ? 0 : r > 255 ? 255 : r;
}

function resample(src, w, h, outW, outH) {
  // horizontal pass, then vertical, each rounded to 8 bits, as Pillow does
  let img = src, width = w;
  if (outW !== w) {
    const cs = coefficients(w, outW), tmp = new Uint8ClampedArray(outW * h * 3);
    for (let y = 0; y < h; y++) for (let xx = 0; xx < outW; xx++) for (let c = 0; c < 3; c++) {
      const { xmin, k } = cs[xx];
      let s = 1 << (PRECISION_BITS - 1);
      for (let i = 0; i < k.length; i++) s += img[(y * width + xmin + i) * 3 + c] * k[i];
      tmp[(y * outW + xx) * 3 + c] = clip8(s);
    }
    img = tmp; width = outW;
  }
  if (outH !== h) {
    const cs = coefficients(h, outH), tmp = new Uint8ClampedArray(width * outH * 3);
    for (let yy = 0; yy < outH; yy++) for (let x = 0; x < width; x++) for (let c = 0; c < 3; c++) {
      const { xmin, k } = cs[yy];
      let s = 1 << (PRECISION_BITS - 1);
      for (let i = 0; i < k.length; i++) s += img[((xmin + i) * width + x) * 3 + c] * k[i];
      tmp[(yy * width + x) * 3 + c] = clip8(s);
    }
    img = tmp;
  }
  return img;
}

function roundHalfEven(v) {
  // Python's round(), which lrpgraph.preprocess.crop uses for the resized sides
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function cropped(rgb, w, h, pre) {
  // lrpgraph.preprocess.crop: the square picture the heatmap lies on (RGB, size x size)
  const size = pre.size, out = new Uint8ClampedArray(size * size * 3);
  if (pre.fit === "pad") {
    const scale = size / Math.max(w, h);
    const rw = Math.max(1, roundHalfEven(w * scale)), rh = Math.max(1, roundHalfEven(h * scale));
    const small = resample(rgb, w, h, rw, rh), left = Math.floor((size - rw) / 2), top = Math.floor((size - rh) / 2);
    for (let i = 0; i < size * size; i++) for (let c = 0; c < 3; c++) out[i * 3 + c] = Math.round(255 * pre.mean[c]);
    for (let y = 0; y < rh; y++) for (let x = 0; x < rw; x++) for (let c = 0; c < 3; c++)
      out[((y + top) * size + x + left) * 3 + c] = small[(y * rw + x) * 3 + c];
    return out;
  }
  const scale = pre.resize / Math.min(w, h);
  const rw = Math.max(size, roundHalfEven(w * scale)), rh = Math.max(size, roundHalfEven(h * scale));
  const big = resample(rgb, w, h, rw, rh), left = Math.floor((rw - size) / 2), top = Math.floor((rh - size) / 2);
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) for (let c = 0; c < 3; c++)
    out[(y * size + x) * 3 + c] = big[((y + top) * rw + x + left) * 3 + c];
  return out;
}

function toInput(picture, pre) {
  // lrpgraph.preprocess.to_input: float32, (v / 255 - mean) / std, channels first unless NHWC
  const n = pre.size * pre.size, x = new Float32Array(n * 3);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) {
    const v = (Math.fround(picture[i * 3 + c] / 255) - pre.mean[c]) / pre.std[c];
    x[pre.layout === "NHWC" ? i * 3 + c : c * n + i] = v;
  }
  return x;
}

async function decode(file) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const rgb = new Uint8ClampedArray(bitmap.width * bitmap.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) { rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2]; }
  return { rgb, width: bitmap.width, height: bitmap.height };
}

// ---- the heatmap, as lrpgraph.heatmaps draws it ------------------------------------------
function robustScale(map) {
  // numpy.percentile(|map|, 99.5) with linear interpolation; its max where that is 0
  const a = Float64Array.from(map, Math.abs).sort();
  const pos = 0.995 * (a.length - 1), lo = Math.floor(pos), frac = pos - lo;
  const p = lo + 1 < a.length ? a[lo] + (a[lo + 1] - a[lo]) * frac : a[lo];
  return p > 0 ? p : (a[a.length - 1] || 1);
}

function colourise(map, cmap) {
  const scale = robustScale(map);
  const signed = cmap.diverging || map.some((v) => v < 0);
  const lo = signed ? -scale : 0, hi = scale, lut = cmap.lut;
  const colour = new Uint8ClampedArray(map.length * 3), weight = new Float32Array(map.length);
  for (let i = 0; i < map.length; i++) {
    const v = Math.min(Math.max((map[i] - lo) / (hi - lo), 0), 1);
    const rgb = lut[Math.min(Math.floor(v * 256), 255)];
    colour[i * 3] = rgb[0]; colour[i * 3 + 1] = rgb[1]; colour[i * 3 + 2] = rgb[2];
    weight[i] = Math.min(Math.abs(map[i]) / scale, 1);
  }
  return { colour, weight, lo, hi };
}

function drawRGB(canvas, rgb, alpha) {
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < canvas.width * canvas.height; i++) {
    img.data.set([rgb[i * 3], rgb[i * 3 + 1], rgb[i * 3 + 2], alpha ? Math.round(255 * alpha[i]) : 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
}

function redraw() {
  const last = state.last;
  if (!last) return;
  const opacity = Number($("opacity").value);
  drawRGB($("heat"), last.heat.colour, last.heat.weight.map((w) => w * opacity));
}

function blended() {
  // lrpgraph.heatmaps.overlay at the slider's opacity: the picture the PNG download holds
  const { picture, heat } = state.last, opacity = Number($("opacity").value);
  const out = new Uint8ClampedArray(picture.length);
  for (let i = 0; i < heat.weight.length; i++) {
    const w = opacity * heat.weight[i];
    for (let c = 0; c < 3; c++) out[i * 3 + c] = Math.round((1 - w) * picture[i * 3 + c] + w * heat.colour[i * 3 + c]);
  }
  return out;
}

window.lrpgraphBlended = blended;

function drawColorbar(cmap, lo, hi) {
  const bar = $("colorbar"), ctx = bar.getContext("2d"), img = ctx.createImageData(256, 1);
  cmap.lut.forEach((rgb, i) => img.data.set([...rgb, 255], i * 4));
  ctx.putImageData(img, 0, 0);
  $("lo").textContent = lo.toExponential(2);
  $("hi").textContent = hi.toExponential(2);
}

// ---- running the explainer -------------------------------------------------------------
let ort, session, config, current = null;

function softmax(logits) {
  const m = Math.max(...logits), e = logits.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

async function explain(target) {
  const pre = config.preprocess, shape = pre.layout === "NHWC" ? [1, pre.size, pre.size, 3] : [1, 3, pre.size, pre.size];
  const feeds = { [config.input]: new ort.Tensor("float32", current.input, shape) };
  if (config.takes_target) feeds.target = new ort.Tensor("int64", BigInt64Array.from([BigInt(target)]), [1]);
  state.busy = true;
  status(target < 0 ? "explaining the predicted class…" : `explaining ${config.classes[target]}…`);
  const t0 = performance.now();
  const out = await session.run(feeds);
  const ms = performance.now() - t0;
  const logits = Array.from(out.logits.data), map = Float32Array.from(out.relevance_map.data);
  const used = Number(out.target_used.data[0]), probs = config.softmax_head ? logits : softmax(logits);
  const heat = colourise(map, config.colormap);
  state.last = { name: current.name, target: used, ms, logits, map: Array.from(map), input: Array.from(current.input),
                 picture: current.picture, heat, probabilities: probs };
  showTop5(probs, used);
  drawRGB($("photo"), current.picture, null);
  redraw();
  drawColorbar(config.colormap, heat.lo, heat.hi);
  $("explained").textContent = `explained ${config.classes[used]} (${(100 * probs[used]).toFixed(1)} %) in ${ms.toFixed(0)} ms`;
  $("result").hidden = false;
  status(`ready: ${state.backend}${state.backend === "wasm" ? `, ${state.threads} thread(s)` : ""}; drop another photo or click a class`);
  state.busy = false;
}

function showTop5(probs, chosen) {
  const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  state.last.top5 = order.map(([, i]) => i);
  $("top5").replaceChildren(...order.map(([p, i]) => {
    const li = document.createElement("li"), button = document.createElement("button");
    button.innerHTML = `${config.classes[i]} — ${(100 * p).toFixed(1)} %<div class="bar" style="width:${(100 * p).toFixed(1)}%"></div>`;
    button.className = i === chosen ? "chosen" : "";
    button.dataset.cls = i;
    button.disabled = !config.takes_target;
    button.title = config.takes_target ? "explain this class" : "this explainer explains the predicted class only";
    button.onclick = () => run(() => explain(i));
    li.append(button);
    return li;
  }));
}

async function run(step) {
  if (state.busy) return;
  try { await step(); } catch (e) { state.busy = false; status(`error: ${e.message || e}`, true); console.error(e); }
}

async function takePhoto(file) {
  status(`reading ${file.name}…`);
  const { rgb, width, height } = await decode(file);
  if (Math.min(width, height) < 16) throw new Error(`${file.name}: ${width}x${height} pixels is too small to explain`);
  const picture = cropped(rgb, width, height, config.preprocess);
  current = { name: file.name, picture, input: toInput(picture, config.preprocess) };
  await explain(-1);
}

async function start() {
  config = await (await fetch("explainer.json")).json();
  $("about").textContent = `${config.model}: ${config.method}${config.composite ? ` (${config.composite} composite)` : ""}, ${config.preprocess.size} px, ${config.classes.length} classes. ` +
    "Photos are read and explained in this browser; nothing is uploaded.";
  $("opacity").value = config.colormap.alpha;
  for (const id of ["photo", "heat"]) $(id).width = $(id).height = config.preprocess.size;
  $("cmapname").textContent = `(${config.colormap.name})`;
  status("loading onnxruntime-web…");
  ort = await import("./ort/ort.webgpu.min.mjs");
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
  state.threads = Number(query.get("threads")) || (self.crossOriginIsolated ? navigator.hardwareConcurrency : 1);
  ort.env.wasm.numThreads = state.threads;
  const model = await fetchWithProgress("explainer.onnx", `loading ${config.model}`);
  status("starting the explainer…");
  const wanted = query.get("ep") || (navigator.gpu && await navigator.gpu.requestAdapter() ? "webgpu" : "wasm");
  try {
    session = await ort.InferenceSession.create(model, { executionProviders: [wanted] });
    state.backend = wanted;
  } catch (e) {
    if (wanted === "wasm") throw e;
    session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
    state.backend = "wasm";
  }
  state.ready = true;
  status(`ready (${state.backend}${state.backend === "wasm" ? `, ${state.threads} thread(s)` : ""}): pick or drop a photo`);
}

$("file").addEventListener("change", (e) => e.target.files[0] && run(() => takePhoto(e.target.files[0])));
$("drop").addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => {
  e.preventDefault(); $("drop").classList.remove("over");
  const file = e.dataTransfer.files[0];
  if (file) run(() => takePhoto(file));
});
$("opacity").addEventListener("input", redraw);
$("download").addEventListener("click", () => {
  const size = config.preprocess.size, canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  drawRGB(canvas, blended(), null);
  canvas.toBlob((blob) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${state.last.name.replace(/\.[^.]*$/, "")}_${state.last.target}.png`;
    a.click();
  }, "image/png");
});
run(start);
