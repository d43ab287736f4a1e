// The page: load the model named by ?model=URL (default ./model.onnx beside the page), then
// detect on a picked, dropped or webcam image; boxes on a canvas, timings, a threshold slider,
// errors in one line. Test hooks: `document.body.dataset.ready = "1"` once loaded (or
// `"error"` with the line in #status), `window.detector.detect(image, threshold)`.
//
// ?verify=1 (used by `python -m runtime.web MODEL --verify`): run the server's cases (same
// tensors, same files) and post the detections back; the sidecar's gate is what it computes.
// ?threads=N, ?provider=wasm|webgpu (default: WebGPU only for a file that passed there) and ?threshold=T (the slider's start) override the defaults.

import { UserError } from "./core/index.mjs";
import { loadDetector } from "./browser.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

function showError(err) {
  const line = err instanceof UserError ? err.message : `${err?.stack ?? err}`.split("\n")[0];
  $("status").textContent = `error: ${line.replace(/\s*\n\s*/g, " ")}`;
  $("status").className = "error";
}

function draw(canvas, image, result) {
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d");
  const rgba = new ImageData(image.width, image.height);
  for (let i = 0, j = 0; j < image.data.length; i += 4, j += 3) {
    rgba.data.set(image.data.subarray(j, j + 3), i);
    rgba.data[i + 3] = 255;
  }
  context.putImageData(rgba, 0, 0);
  const line = Math.max(2, Math.round(Math.max(image.width, image.height) / 250));
  context.lineWidth = line;
  context.font = `${6 * line + 6}px sans-serif`;
  result.boxes.forEach(([x1, y1, x2, y2], i) => {
    const color = PALETTE[result.class_ids[i] % PALETTE.length];
    context.strokeStyle = color;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${result.class_names[i]} ${result.scores[i].toFixed(2)}`;
    const height = 6 * line + 10;
    const top = y1 >= height ? y1 - height : y1;
    context.fillStyle = color;
    context.fillRect(x1, top, context.measureText(label).width + 8, height);
    context.fillStyle = "#fff";
    context.fillText(label, x1 + 4, top + height - 5);
  });
}

async function verify(detector) {
  const cases = await (await fetch("/__verify__/cases.json")).json();
  const report = { info: detector.info, userAgent: navigator.userAgent, tensors: [], images: [] };
  for (const item of cases.tensors) {
    const images = new Float32Array(await (await fetch(item.tensor)).arrayBuffer());
    report.tensors.push(await detector.detectTensor(images, item.orig_size, 0.0));
  }
  for (const item of cases.images) report.images.push(await detector.detect(item.image, 0.0));
  return report;
}

async function main() {
  const modelUrl = params.get("model") ?? "model.onnx";
  const threads = params.has("threads") ? Number(params.get("threads")) : undefined;
  const provider = params.get("provider") ?? "auto"; // auto: WebGPU only where it passed the check
  const verifying = params.get("verify") === "1";
  $("status").textContent = `loading ${modelUrl} ...`;
  let detector;
  try {
    detector = await loadDetector(modelUrl, { provider, threads, verify: verifying });
  } catch (err) {
    if (verifying) await post({ error: err.message ?? String(err) });
    throw err;
  }
  window.detector = detector;
  const { info } = detector;
  $("model").textContent =
    `${modelUrl}: ${Object.keys(detector.sidecar.id2label).length} classes, input ` +
    `${detector.preprocessing.height}x${detector.preprocessing.width}, onnxruntime-web ${info.version} ` +
    `${info.provider}, ${info.threads} thread${info.threads > 1 ? "s" : ""}` +
    `${info.isolated ? "" : " (not cross-origin isolated)"}, loaded in ${info.loadMs.toFixed(0)} ms`;
  $("status").textContent = "ready: pick or drop a JPEG";
  $("status").className = "";
  document.body.dataset.ready = "1";
  if (verifying) {
    try {
      await post(await verify(detector));
    } catch (err) {
      await post({ error: err.message ?? String(err) });
    }
  }
}

async function post(body) {
  await fetch("/__verify__/result", { method: "POST", body: JSON.stringify(body) });
}

let last = null; // the image shown, rerun when the slider moves

async function show(input) {
  try {
    const threshold = Number($("threshold").value);
    const out = await window.detector.detectTimed(input, threshold);
    last = input;
    draw($("canvas"), out.image, out.result);
    const t = out.timings;
    $("timings").textContent =
      `decode ${t.decode.toFixed(1)} ms (${out.decoder}), preprocessing ${t.preprocess.toFixed(1)} ms, ` +
      `model ${t.model.toFixed(1)} ms; ${out.result.scores.length} detections above ${threshold.toFixed(2)}`;
    $("status").textContent = "ready";
    $("status").className = "";
  } catch (err) {
    showError(err);
  }
}

function wire() {
  if (params.has("threshold")) $("threshold").value = params.get("threshold");
  $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
  $("file").addEventListener("change", (event) => event.target.files[0] && show(event.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => event.preventDefault());
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) show(file);
  });
  $("threshold").addEventListener("input", () => {
    $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
    if (last !== null && !(last instanceof HTMLVideoElement)) show(last);
  });
  if (navigator.mediaDevices?.getUserMedia) {
    $("webcam").hidden = false;
    $("webcam").addEventListener("click", async () => {
      try {
        const video = $("video");
        video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
        await video.play();
        const loop = async () => {
          if (!video.srcObject) return;
          await show(await createImageBitmap(video));
          requestAnimationFrame(loop);
        };
        loop();
      } catch (err) {
        showError(new UserError(`webcam: ${err.message ?? err}`));
      }
    });
  }
}

wire();
main().catch((err) => {
  showError(err);
  document.body.dataset.ready = "error";
});
