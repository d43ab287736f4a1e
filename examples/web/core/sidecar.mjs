// The sidecar (`<stem>.json` beside `<stem>.onnx`, schema 2): read and checked the way every
// client must, from its text and the model's sha256 (the shells read files or fetch URLs).

import { UserError } from "./errors.mjs";
import { FILTERS } from "./tensor.mjs";

export const SIDECAR_SCHEMA = 2;

/**
 * `<stem>.json` beside `<stem>.onnx` (model.int8.onnx -> model.int8.json), as runtime.sidecar:
 * the last suffix of the last path segment replaced; a URL's query and fragment are dropped.
 */
export function sidecarPath(modelPath) {
  const bare = String(modelPath).replace(/[?#].*$/, "");
  const slash = Math.max(bare.lastIndexOf("/"), bare.lastIndexOf("\\"));
  const dot = bare.lastIndexOf(".");
  const stem = dot > slash + 1 ? bare.slice(0, dot) : bare;
  return `${stem}.json`;
}

/** The file name at the end of a path or URL. */
export function baseName(modelPath) {
  const bare = String(modelPath).replace(/[?#].*$/, "");
  return bare.slice(Math.max(bare.lastIndexOf("/"), bare.lastIndexOf("\\")) + 1);
}

/** The one-line refusal of a model without its sidecar. */
export function missingSidecar(modelPath, file) {
  return new UserError(
    `${modelPath}: no sidecar ${file} (label map and preprocessing); ` +
      `\`python -m runtime.sidecar ${modelPath}\` writes it`,
  );
}

/**
 * Parse and check a sidecar's text: JSON object, schema, `model.sha256` equal to `sha256` (the
 * hex digest of the model's bytes), id2label, preprocessing. Returns it with `path` and the
 * normalised `preprocessing`.
 */
export function checkSidecar(text, { file, modelPath, sha256 }) {
  let sidecar;
  try {
    sidecar = JSON.parse(text);
  } catch (err) {
    throw new UserError(`${file}: not valid JSON (${err.message})`);
  }
  if (sidecar === null || typeof sidecar !== "object" || Array.isArray(sidecar)) {
    throw new UserError(`${file}: expected a JSON object`);
  }
  if (sidecar.schema !== SIDECAR_SCHEMA) {
    throw new UserError(
      `${file}: sidecar schema ${JSON.stringify(sidecar.schema)} is not supported ` +
        `(this client reads schema ${SIDECAR_SCHEMA}); re-export or rewrite it with ` +
        `\`python -m runtime.sidecar ${modelPath}\``,
    );
  }
  const expected = sidecar.model?.sha256;
  if (typeof expected !== "string") {
    throw new UserError(`${file}: missing model.sha256`);
  }
  if (expected.toLowerCase() !== sha256) {
    throw new UserError(
      `${file}: stale sidecar, it describes another export (model.sha256 ${expected.slice(0, 12)}..., ` +
        `${baseName(modelPath)} is ${sha256.slice(0, 12)}...); ` +
        `\`python -m runtime.sidecar ${modelPath}\` rewrites it`,
    );
  }
  if (!sidecar.id2label || typeof sidecar.id2label !== "object") {
    throw new UserError(`${file}: missing id2label`);
  }
  return { ...sidecar, path: file, preprocessing: parsePreprocessing(sidecar, file) };
}

// PIL's resampling codes, as transformers stores them.
const RESAMPLE_CODES = { 0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming" };

function parsePreprocessing(sidecar, file) {
  const pre = sidecar.preprocessing;
  if (!pre || typeof pre !== "object") {
    throw new UserError(`${file}: missing preprocessing`);
  }
  const size = pre.size ?? {};
  let height = size.height;
  let width = size.width;
  if (!Number.isInteger(height) || !Number.isInteger(width)) {
    [height, width] = sidecar.input_size ?? [];
  }
  if (!Number.isInteger(height) || !Number.isInteger(width) || height < 1 || width < 1) {
    throw new UserError(`${file}: preprocessing.size must be {"height": H, "width": W}`);
  }
  const color = pre.color ?? "RGB";
  if (color !== "RGB") {
    throw new UserError(`${file}: preprocessing.color ${JSON.stringify(color)} is not supported (RGB)`);
  }
  const layout = pre.layout ?? "NCHW";
  if (layout !== "NCHW") {
    throw new UserError(`${file}: preprocessing.layout ${JSON.stringify(layout)} is not supported (NCHW)`);
  }
  const images = (sidecar.inputs ?? []).find((input) => input.name === "images");
  if (images && images.dtype && images.dtype !== "float32") {
    throw new UserError(`${file}: input images has dtype ${images.dtype}; this client feeds float32`);
  }
  let resample = pre.resample ?? "bilinear";
  if (typeof resample === "number") resample = RESAMPLE_CODES[resample] ?? String(resample);
  resample = String(resample).toLowerCase();
  if (!(resample in FILTERS)) {
    throw new UserError(
      `${file}: resample ${JSON.stringify(pre.resample)} is not supported ` +
        `(one of ${Object.keys(FILTERS).join(", ")})`,
    );
  }
  const triple = (value, fallback, name) => {
    const v = value ?? fallback;
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === "number")) {
      throw new UserError(`${file}: preprocessing.${name} must be 3 numbers`);
    }
    return v;
  };
  return {
    height,
    width,
    resample,
    exifTranspose: pre.exif_transpose ?? true,
    doResize: pre.do_resize ?? true,
    doRescale: pre.do_rescale ?? true,
    rescaleFactor: pre.rescale_factor ?? 1 / 255,
    doNormalize: pre.do_normalize ?? false,
    imageMean: triple(pre.image_mean, [0.485, 0.456, 0.406], "image_mean"),
    imageStd: triple(pre.image_std, [0.229, 0.224, 0.225], "image_std"),
  };
}

/** The `verified.runtimes` name of this page's runtime: `onnxruntime-web 1.30.0`. */
export function webRuntimeName(version) {
  return `onnxruntime-web ${version}`;
}

/**
 * Whether the sidecar says this file passed the browser check (`python -m runtime.web --verify`:
 * same tensor -> detections equal to runtime.Detector) in this onnxruntime-web version with
 * this execution provider ("wasm" or "webgpu"). Returns `{usable, reason}`: a file that failed
 * there is refused with the recorded reason, one never checked there is refused with the fix.
 */
export function browserVerdict(sidecar, { version, provider, modelPath }) {
  const runtime = webRuntimeName(version);
  const entries = (sidecar.verified?.runtimes ?? []).filter(
    (entry) => entry?.runtime === runtime && entry?.provider === provider,
  );
  if (entries.some((entry) => entry.passed === true)) return { usable: true, reason: "" };
  const failed = entries.find((entry) => entry.passed === false);
  if (failed) {
    const why = (failed.failures ?? []).join("; ") || "no reason recorded";
    return {
      usable: false,
      reason: `${modelPath}: failed the browser check in ${runtime} (${provider}): ${why}`,
    };
  }
  return {
    usable: false,
    reason:
      `${modelPath}: not verified in ${runtime} (${provider}); ` +
      `\`python -m runtime.web ${baseName(modelPath)} --verify\` checks it against runtime.Detector`,
  };
}
