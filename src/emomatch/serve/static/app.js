// The emomatch page: send a clip and/or a transcript to POST /predict and draw the answer.
"use strict";

const PALETTE = ["#d64545", "#e0a400", "#6b7a90", "#3a6fd8", "#2e9e6a", "#9b59b6", "#e67e22",
  "#16a5a5", "#8c6d46", "#c2185b"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

let labels = [];
let recorded = null; // a File made from the last recording; wins over the file input
let recorder = null;

function colour(label) {
  const i = labels.indexOf(label);
  return PALETTE[(i < 0 ? labels.length : i) % PALETTE.length];
}

function percent(p) {
  return `${(100 * p).toFixed(1)} %`;
}

async function describeModel() {
  try {
    const health = await (await fetch("/health")).json();
    labels = health.labels;
    const mods = health.modalities.join(", ");
    const lim = health.limits;
    $("model").textContent = `Classes: ${labels.join(", ")} · reads ${mods} · clips up to ` +
      `${lim.max_seconds} s and ${lim.max_upload_mb} MB; longer than ` +
      `${lim.segment_seconds} s also get emotion over time.`;
    offerInputs(new Set(health.modalities));
  } catch (err) {
    $("model").textContent = "The service does not answer /health.";
  }
}

// Only the inputs the model reads: no camera without the visual modality, no transcript box
// without the lexical one, no microphone for a model of faces alone.
function offerInputs(reads) {
  $("record-video").hidden = !reads.has("visual");
  $("record-audio").hidden = !(reads.has("acoustic") || reads.has("lexical"));
  $("transcript").hidden = !reads.has("lexical");
  if (!reads.has("lexical")) $("text").value = "";
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function showChosen(file, url) {
  const box = $("chosen");
  box.textContent = "";
  if (!file) {
    box.textContent = "No clip chosen.";
    return;
  }
  const kb = (file.size / 1024).toFixed(0);
  box.append(`${file.name} (${file.type || "unknown type"}, ${kb} KB)`);
  if (url) {
    const player = document.createElement(file.type.startsWith("video") ? "video" : "audio");
    player.controls = true;
    player.src = url;
    box.append(player);
  }
}

async function startRecording(withVideo) {
  showError("");
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError("This browser cannot record here (it needs MediaRecorder and a secure origin " +
      "such as http://127.0.0.1 or https).");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: withVideo });
  } catch (err) {
    showError(`No access to the ${withVideo ? "camera" : "microphone"}: ${err.message}`);
    return;
  }
  const preview = $("preview");
  if (withVideo) {
    preview.srcObject = stream;
    preview.hidden = false;
    preview.play();
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  const began = Date.now();
  const tick = setInterval(() => {
    $("rec-time").textContent = `recording ${((Date.now() - began) / 1000).toFixed(0)} s`;
  }, 250);
  recorder.onstop = () => {
    clearInterval(tick);
    stream.getTracks().forEach((t) => t.stop());
    preview.hidden = true;
    preview.srcObject = null;
    const type = (recorder.mimeType || (withVideo ? "video/webm" : "audio/webm")).split(";")[0];
    const blob = new Blob(chunks, { type });
    recorded = new File([blob], `recording.${type.includes("mp4") ? "mp4" : "webm"}`, { type });
    $("clip").value = "";
    $("rec-time").textContent = "";
    showChosen(recorded, URL.createObjectURL(blob));
    setRecording(null);
  };
  recorder.start(250);
  setRecording(withVideo ? "record-video" : "record-audio");
}

function setRecording(buttonId) {
  for (const id of ["record-audio", "record-video"]) {
    $(id).disabled = buttonId !== null;
    $(id).classList.toggle("recording", id === buttonId);
  }
  $("stop").disabled = buttonId === null;
}

function detail(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return `the service answered ${status}`;
}

async function predict(event) {
  event.preventDefault();
  showError("");
  const form = new FormData();
  const file = recorded || $("clip").files[0];
  if (file) form.append("clip", file, file.name);
  const text = $("text").value.trim();
  if (text) form.append("text", text);
  if (!file && !text) {
    showError("Choose or record a clip, or type a transcript.");
    return;
  }
  $("predict").disabled = true;
  $("status").textContent = "predicting…";
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok) {
      const wait = response.headers.get("Retry-After");
      const again = wait ? ` (try again in ${wait} s)` : "";
      throw new Error(`${response.status}: ${detail(body, response.status)}${again}`);
    }
    render(body);
    $("status").textContent = "";
  } catch (err) {
    $("status").textContent = "";
    showError(err.message);
  } finally {
    $("predict").disabled = false;
  }
}

function render(result) {
  if (!labels.length) labels = Object.keys(result.probabilities);
  $("result").hidden = false;
  $("label").textContent = result.label;
  $("label").style.color = colour(result.label);
  $("confidence").textContent = percent(result.probabilities[result.label] || 0);
  const seconds = result.seconds ? ` · ${result.seconds.toFixed(1)} s of media` : "";
  $("used").textContent = `from ${result.modalities.join(", ")}${seconds}`;
  const skipped = Object.entries(result.missing || {}).map(([m, why]) => `${m}: ${why}`);
  $("missing").textContent = skipped.length ? `not used: ${skipped.join("; ")}` : "";
  const bars = $("bars");
  bars.textContent = "";
  for (const name of labels) {
    const p = result.probabilities[name] || 0;
    const row = document.createElement("div");
    row.className = name === result.label ? "bar top" : "bar";
    row.dataset.label = name;
    const fill = `<div class="fill" style="width:${(100 * p).toFixed(1)}%;` +
      `background:${colour(name)}"></div>`;
    row.innerHTML = `<span class="name"></span><div class="track">${fill}</div>` +
      `<span class="value">${percent(p)}</span>`;
    row.querySelector(".name").textContent = name;
    bars.append(row);
  }
  const segments = result.segments || [];
  $("timeline-box").hidden = segments.length < 2;
  if (segments.length >= 2) drawTimeline(segments);
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

// One line per class (probability against time) over a strip of the winning class per window.
function drawTimeline(segments) {
  const W = 700, H = 220, left = 34, right = 10, top = 22, bottom = 26;
  const starts = segments.map((s, i) => (s.start ?? i));
  const ends = segments.map((s, i) => (s.end ?? i + 1));
  const t0 = Math.min(...starts), t1 = Math.max(...ends);
  const x = (t) => left + ((t - t0) / Math.max(t1 - t0, 1e-9)) * (W - left - right);
  const y = (p) => top + (1 - p) * (H - top - bottom);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "probability of each emotion over time" });
  for (const p of [0, 0.5, 1]) {
    el("line", { x1: left, x2: W - right, y1: y(p), y2: y(p), stroke: "#e4e7ee" }, svg);
    el("text", { x: left - 6, y: y(p) + 4, "text-anchor": "end" }, svg).textContent = `${p * 100}`;
  }
  const step = Math.max(1, Math.ceil((t1 - t0) / 10));
  for (let t = Math.ceil(t0); t <= t1 + 1e-9; t += step) {
    el("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, svg).textContent = `${t}s`;
  }
  segments.forEach((s, i) => {
    const strip = el("rect", { x: x(starts[i]), y: 4, height: 10,
      width: Math.max(1, x(ends[i]) - x(starts[i]) - 1), fill: colour(s.label) }, svg);
    el("title", {}, strip).textContent = `${starts[i]}–${ends[i]} s: ${s.label}`;
  });
  const mids = segments.map((s, i) => (starts[i] + ends[i]) / 2);
  for (const name of labels) {
    const points = segments.map((s, i) => `${x(mids[i])},${y(s.probabilities[name] || 0)}`);
    el("polyline", { points: points.join(" "), fill: "none", stroke: colour(name),
      "stroke-width": 2, "data-label": name }, svg);
  }
  $("timeline").replaceChildren(svg);
  $("legend").replaceChildren(...labels.map((name) => {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${colour(name)}"></i>`;
    item.append(name);
    return item;
  }));
}

function clearAll() {
  recorded = null;
  $("clip").value = "";
  $("text").value = "";
  showChosen(null);
  showError("");
  $("result").hidden = true;
}

document.addEventListener("DOMContentLoaded", () => {
  describeModel();
  $("form").addEventListener("submit", predict);
  $("clip").addEventListener("change", () => {
    recorded = null;
    const file = $("clip").files[0];
    showChosen(file, file ? URL.createObjectURL(file) : null);
  });
  $("record-audio").addEventListener("click", () => startRecording(false));
  $("record-video").addEventListener("click", () => startRecording(true));
  $("stop").addEventListener("click", () => { if (recorder) recorder.stop(); });
  $("clear").addEventListener("click", clearAll);
});
