// The browser shell of the client core (./core/): fetches the model and its sidecar, checks
// them, opens an onnxruntime-web session, and turns a URL, Blob, ImageBitmap, <img>, <video>
// or <canvas> into the Node client's JSON (`image_size`, `boxes`, `scores`, `class_ids`,
// `class_names`).
//
// Two decoders, chosen by what is given:
// - JPEG bytes (a URL or a Blob) are decoded by jpeg-js with libjpeg-turbo's upsampling and
//   colour conversion (./core/jpeg.mjs), EXIF orientation applied as Pillow does: the
//   tensor is within the IDCT's rounding of runtime.Detector's (measured by
//   tests/test_web_page.py).
// - Decoded pixels (ImageBitmap, <img>, <video>, <canvas>: the webcam, or an image the
//   browser decoded) come from a canvas: the browser's own decoder, composited on white as
//   the Python runtime composites alpha. Its agreement is measured by the same test.
// Other bytes (PNG, WebP, ...) are refused as the Node client refuses them.

import {
  ModelRunner,
  UserError,
  applyOrientation,
  browserVerdict,
  checkSidecar,
  decodeJpeg,
  exifOrientation,
  firstLine,
  missingSidecar,
  sha256Hex,
  sidecarPath,
} from "./core/index.mjs";

const now = () => performance.now();

async function fetchChecked(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new UserError(`${url}: cannot fetch the ${what} (${firstLine(err)})`);
  }
  if (response.status === 404) throw new UserError(`${url}: no such ${what} file`);
  if (!response.ok) throw new UserError(`${url}: cannot fetch the ${what} (HTTP ${response.status})`);
  return response;
}

async function digest(bytes) {
  if (globalThis.crypto?.subtle) {
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return sha256Hex(bytes);
}

/** The onnxruntime-web module for an execution provider (import map in index.html). */
async function importOrt(provider) {
  const module = provider === "webgpu" ? await import("onnxruntime-web/webgpu") : await import("onnxruntime-web");
  return module.default ?? module;
}

/** Threads for the WASM backend: several only where the page is cross-origin isolated. */
export function defaultThreads() {
  return globalThis.crossOriginIsolated ? Math.min(navigator.hardwareConcurrency || 1, 4) : 1;
}

/**
 * Load `modelUrl` and its sidecar; refuse a missing or stale sidecar, and (unless `verify`) a
 * file the sidecar does not record as having passed the browser check in this
 * onnxruntime-web version and provider.
 */
export async function loadDetector(modelUrl, { provider = "auto", threads = defaultThreads(), verify = false } = {}) {
  const started = now();
  const model = new Uint8Array(await (await fetchChecked(modelUrl, "model")).arrayBuffer());
  const file = sidecarPath(modelUrl);
  let response;
  try {
    response = await fetchChecked(file, "sidecar");
  } catch (err) {
    if (err instanceof UserError && err.message.endsWith("file")) throw missingSidecar(modelUrl, file);
    throw err;
  }
  const sidecar = checkSidecar(await response.text(), { file, modelPath: modelUrl, sha256: await digest(model) });
  if (provider === "auto") provider = await autoProvider(sidecar, modelUrl);
  const ort = await importOrt(provider);
  const version = ort.env.versions?.web ?? "unknown";
  if (!verify) {
    const verdict = browserVerdict(sidecar, { version, provider, modelPath: modelUrl });
    if (!verdict.usable) throw new UserError(verdict.reason);
  }
  ort.env.wasm.numThreads = threads;
  let session;
  try {
    session = await ort.InferenceSession.create(model, {
      executionProviders: [provider],
      graphOptimizationLevel: "all",
    });
  } catch (err) {
    throw new UserError(`${modelUrl}: onnxruntime-web cannot load it (${firstLine(err)})`);
  }
  const detector = new WebDetector(modelUrl, sidecar, session, ort);
  detector.info = { provider, threads, version, loadMs: now() - started, isolated: !!globalThis.crossOriginIsolated };
  return detector;
}

/**
 * WebGPU where the browser has it and the sidecar records that this file passed the browser
 * check there (ONNX Runtime's WebGPU GridSample is wrong for this family, onnxruntime issue
 * 32275: a file is trusted on WebGPU only after it passed), else WASM.
 */
async function autoProvider(sidecar, modelPath) {
  if (!globalThis.navigator?.gpu) return "wasm";
  const version = (await importOrt("wasm")).env.versions?.web ?? "unknown";
  return browserVerdict(sidecar, { version, provider: "webgpu", modelPath }).usable ? "webgpu" : "wasm";
}

/** RGBA pixels -> RGB. */
function rgbOf(rgba, width, height) {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; j < data.length; i += 4, j += 3) {
    data[j] = rgba[i];
    data[j + 1] = rgba[i + 1];
    data[j + 2] = rgba[i + 2];
  }
  return { width, height, data };
}

/** An image the browser decoded, through a canvas, composited on white. */
function canvasPixels(source) {
  const width = source.naturalWidth ?? source.videoWidth ?? source.width;
  const height = source.naturalHeight ?? source.videoHeight ?? source.height;
  if (!width || !height) throw new UserError("image: nothing to read (not loaded, or 0x0)");
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.fillStyle = "#fff";
  context.fillRect(0, 0, width, height);
  context.drawImage(source, 0, 0, width, height);
  return rgbOf(context.getImageData(0, 0, width, height).data, width, height);
}

/** The core's detector on onnxruntime-web, with the page's image inputs. */
export class WebDetector extends ModelRunner {
  /** Image -> {image: RGB, decoder: "jpeg-js" | "browser", source}. */
  async pixels(input) {
    let source = "image";
    let blob = input;
    if (typeof input === "string" || input instanceof URL) {
      source = String(input);
      blob = await (await fetchChecked(source, "image")).blob();
    }
    if (blob instanceof Blob || blob instanceof ArrayBuffer || ArrayBuffer.isView(blob)) {
      if (blob instanceof File) source = blob.name;
      let bytes;
      if (blob instanceof Blob) bytes = new Uint8Array(await blob.arrayBuffer());
      else if (ArrayBuffer.isView(blob)) bytes = new Uint8Array(blob.buffer, blob.byteOffset, blob.byteLength);
      else bytes = new Uint8Array(blob);
      const image = decodeJpeg(bytes, source, globalThis["jpeg-js"].decode);
      const oriented = this.preprocessing.exifTranspose ? applyOrientation(image, exifOrientation(bytes)) : image;
      return { image: oriented, decoder: "jpeg-js", source };
    }
    return { image: canvasPixels(input), decoder: "browser", source };
  }

  /** Image -> {images: Float32Array, origSize, decoder, image, decodeMs, preprocessMs}. */
  async prepare(input) {
    const t0 = now();
    const { image, decoder, source } = await this.pixels(input);
    const t1 = now();
    const { images, origSize } = this.prepareRGB(image);
    return { images, origSize, decoder, source, image, decodeMs: t1 - t0, preprocessMs: now() - t1 };
  }

  /** Image -> {result (the Node client's JSON), timings in ms, decoder, image}. */
  async detectTimed(input, threshold = 0.5) {
    const prepared = await this.prepare(input);
    const t0 = now();
    const outputs = await this.run(prepared.images, prepared.origSize);
    const modelMs = now() - t0;
    return {
      result: this.decode(outputs, prepared.origSize, threshold),
      outputs,
      decoder: prepared.decoder,
      image: prepared.image,
      timings: { decode: prepared.decodeMs, preprocess: prepared.preprocessMs, model: modelMs },
    };
  }

  /** The test hook: image -> the Node client's JSON. */
  async detect(input, threshold = 0.5) {
    return (await this.detectTimed(input, threshold)).result;
  }

  /** A raw float32 NCHW tensor (the same tensor as Detector's) -> the Node client's JSON. */
  async detectTensor(images, origSize, threshold = 0.5) {
    return this.decode(await this.run(images, origSize), origSize, threshold);
  }
}
