// pneumoscan web page: upload one X-ray, show the server's probability, label, threshold and Grad-CAM heatmap.
// Plain JavaScript, no external assets: the page must work offline and under a strict Content-Security-Policy.
// All URLs are relative so the app also works behind a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { authRequired: false, heatmaps: false, model: null, busy: false, emptyHeatmap: false };
const KEY_STORAGE = "pneumoscan.apiKey";

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function headers() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

async function readJson(response) {
  try {
    return await response.json();
  } catch (_) {
    return null;
  }
}

function detailOf(body, response) {
  if (body && typeof body.detail === "string") return body.detail;
  return `the server answered ${response.status} ${response.statusText || ""}`.trim();
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

function fmt(value, digits) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
}

function showModel(model) {
  state.model = model;
  state.heatmaps = Boolean(model.heatmaps);
  $("model-badge").textContent = `${model.name} · ${model.version} · ${model.backend}`;
  $("model-name").textContent = model.name;
  $("model-version").textContent = model.version;
  $("model-backend").textContent = model.backend === "onnx" ? "ONNX Runtime" : "PyTorch";
  $("model-size").textContent = `${model.image_size} × ${model.image_size} px`;
  $("threshold-rule").textContent = model.threshold_rule;
  const toggle = $("heatmap-toggle");
  toggle.disabled = !state.heatmaps;
  $("heatmap-toggle-label").classList.toggle("disabled", !state.heatmaps);
  $("heatmap-note").textContent = state.heatmaps ? "" : "Heatmaps need the PyTorch backend.";
}

async function loadModel() {
  const response = await fetch("v1/model", { headers: headers() });
  const body = await readJson(response);
  if (response.status === 401) {
    $("key-panel").hidden = false;
    $("model-badge").textContent = "API key required";
    if (apiKey()) showError(detailOf(body, response));
    return false;
  }
  if (!response.ok) {
    showError(detailOf(body, response));
    return false;
  }
  clearError();
  showModel(body);
  return true;
}

async function init() {
  try {
    const response = await fetch("healthz");
    const health = await readJson(response);
    if (health) {
      state.authRequired = Boolean(health.auth_required);
      $("footer-version").textContent = `pneumoscan ${health.pneumoscan_version}`;
    }
    $("key-panel").hidden = !state.authRequired;
    await loadModel();
  } catch (err) {
    showError(`cannot reach the server (${err.message})`);
  }
}

function resetResult() {
  $("result").hidden = true;
  $("result-empty").hidden = false;
  $("probability").textContent = "–";
  $("probability").dataset.value = "";
}

// Digits to show: 4, or more when the probability and the threshold would otherwise print the same (a label that
// contradicts the printed numbers is worse than a long number).
function digitsFor(p, threshold) {
  let digits = 4;
  while (digits < 8 && p !== threshold && p.toFixed(digits) === threshold.toFixed(digits)) digits += 1;
  return digits;
}

function showResult(result, model) {
  const p = result.probability;
  const t = result.threshold;
  // The competence gate: an image unlike the model's training images gets no label, and the page says so in words.
  const outOfScope = result.status === "out_of_scope";
  const positive = !outOfScope && result.label === model.class_names[model.class_names.length - 1];
  const digits = digitsFor(p, t);
  $("scope-warning").hidden = !outOfScope;
  $("scope-reason").textContent = outOfScope ? `Reason: ${result.reason || "not given"}.` : "";
  $("probability-caption").textContent = outOfScope
    ? "Model output (for information only: not a probability of pneumonia for this image)"
    : "Probability of pneumonia";
  $("probability").classList.toggle("muted-prob", outOfScope);
  $("probability").textContent = fmt(p, digits);
  $("probability").dataset.value = String(p);
  $("population").textContent = result.population || "–";
  const label = $("label");
  label.textContent = outOfScope ? "OUT OF SCOPE" : result.label;
  label.className = `chip ${outOfScope ? "out-of-scope" : positive ? "positive" : "negative"}`;
  $("threshold").textContent = fmt(t, digits);
  const fill = $("meter-fill");
  fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
  fill.classList.toggle("positive", positive);
  const marker = $("meter-threshold");
  marker.style.left = `${Math.max(0, Math.min(1, t)) * 100}%`;
  marker.classList.toggle("near-end", t > 0.85);
  marker.classList.toggle("near-start", t < 0.15);
  $("result-empty").hidden = true;
  $("result").hidden = false;
}

// Size the X-ray to fill the card (small images are enlarged, large ones shrunk), aspect kept. The overlay is
// stretched over exactly that box: the model saw the image squashed to a square, so the square heatmap maps back
// onto the full image by stretching it the same way.
const MAX_VIEW_HEIGHT = 560;

function fitPreview() {
  const img = $("preview");
  if (!img.naturalWidth || $("viewer").hidden) return;
  const available = $("viewer").clientWidth;
  const scale = Math.min(available / img.naturalWidth, MAX_VIEW_HEIGHT / img.naturalHeight);
  img.style.width = `${Math.floor(img.naturalWidth * scale)}px`;
  img.style.height = `${Math.floor(img.naturalHeight * scale)}px`;
}

function showImage(result) {
  $("preview").src = `data:image/png;base64,${result.preview_png_base64}`;
  const overlay = $("overlay");
  state.emptyHeatmap = false;
  if (result.heatmap_png_base64) {
    overlay.src = `data:image/png;base64,${result.heatmap_png_base64}`;
  } else {
    overlay.removeAttribute("src");
  }
  placeOverlay(overlay, result.input_box);
  showLungs(result);
  syncOverlay();
  $("dropzone").hidden = true;
  $("viewer").hidden = false;
  fitPreview();
}

function syncOverlay() {
  const visible = $("heatmap-toggle").checked && Boolean($("overlay").getAttribute("src"));
  $("overlay").hidden = !visible;
  $("legend").hidden = !visible;
  syncLungs();
  if (state.heatmaps) $("heatmap-note").textContent = visible && state.emptyHeatmap ? EMPTY_HEATMAP : "";
}

// A model that crops to the lungs saw only `input_box` of the image: its heatmap covers that box, not the image.
function placeOverlay(img, box) {
  const [x0, y0, x1, y1] = box || [0, 0, 1, 1];
  img.style.left = `${x0 * 100}%`;
  img.style.top = `${y0 * 100}%`;
  img.style.width = `${(x1 - x0) * 100}%`;
  img.style.height = `${(y1 - y0) * 100}%`;
}

function showLungs(result) {
  const outline = $("lung-outline");
  if (result.lung_outline_png_base64) {
    outline.src = `data:image/png;base64,${result.lung_outline_png_base64}`;
  } else {
    outline.removeAttribute("src");
  }
  $("lungs-toggle").disabled = !result.lung_outline_png_base64;
  $("lungs-toggle-label").classList.toggle("disabled", !result.lung_outline_png_base64);
  const notes = [];
  if (result.lungs && !result.lungs.lungs_found) notes.push("No lungs found: the model saw the whole image.");
  if (typeof result.heatmap_lung_fraction === "number") {
    notes.push(`${Math.round(result.heatmap_lung_fraction * 100)}% of the heatmap lies inside the lungs.`);
  }
  $("lungs-note").textContent = notes.join(" ");
}

function syncLungs() {
  const outline = $("lung-outline");
  outline.hidden = !($("lungs-toggle").checked && Boolean(outline.getAttribute("src")));
}

const EMPTY_HEATMAP = "Empty heatmap: no region pushed the model towards pneumonia.";

// Grad-CAM keeps only evidence *for* pneumonia; an all-transparent heatmap is a result, not a bug, so say so.
function checkHeatmap() {
  const img = $("overlay");
  state.emptyHeatmap = false;
  if (img.naturalWidth) {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let maxAlpha = 0;
    for (let i = 3; i < pixels.length; i += 4) maxAlpha = Math.max(maxAlpha, pixels[i]);
    state.emptyHeatmap = maxAlpha < 8;
  }
  syncOverlay();
}

function showDropzone() {
  $("viewer").hidden = true;
  $("dropzone").hidden = false;
  $("file-name").textContent = "";
  resetResult();
}

async function analyse(file) {
  if (!file || state.busy) return;
  if (state.authRequired && !apiKey()) {
    showError("enter the API key first");
    $("key-panel").hidden = false;
    return;
  }
  state.busy = true;
  clearError();
  resetResult();
  $("file-name").textContent = file.name;
  $("busy").hidden = false;
  const form = new FormData();
  form.append("files", file, file.name);
  const query = new URLSearchParams({ preview: "true", heatmap: String(state.heatmaps) });
  try {
    const response = await fetch(`v1/predict?${query}`, { method: "POST", body: form, headers: headers() });
    const body = await readJson(response);
    if (!response.ok) {
      if (response.status === 401) $("key-panel").hidden = false;
      showDropzone();
      $("file-name").textContent = file.name;
      showError(detailOf(body, response));
      return;
    }
    if (!state.model) showModel(body.model);
    const result = body.results[0];
    if (result.error) {
      showDropzone();
      showError(result.error);
      return;
    }
    showImage(result);
    showResult(result, body.model);
  } catch (err) {
    showDropzone();
    showError(`upload failed (${err.message})`);
  } finally {
    state.busy = false;
    $("busy").hidden = true;
    $("file-input").value = "";
  }
}

function wire() {
  $("file-input").addEventListener("change", (event) => analyse(event.target.files[0]));
  const zone = $("dropzone");
  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("dragging")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    analyse(event.dataTransfer.files[0]);
  });
  // A file dropped next to the zone must not make the browser navigate away to it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  $("preview").addEventListener("load", fitPreview);
  $("overlay").addEventListener("load", checkHeatmap);
  window.addEventListener("resize", fitPreview);
  $("heatmap-toggle").addEventListener("change", syncOverlay);
  $("lungs-toggle").addEventListener("change", syncLungs);
  $("another").addEventListener("click", () => {
    clearError();
    showDropzone();
    $("file-input").click();
  });
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    if (await loadModel()) $("key-panel").hidden = true;
  });
}

wire();
init();
