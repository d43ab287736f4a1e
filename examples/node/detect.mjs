#!/usr/bin/env node
// Run an rtdetr-deploy ONNX export from Node.js, following the exported model's contract.
//
//   node detect.mjs MODEL.onnx IMAGE.jpg [--threshold 0.5]
//
// prints one JSON object: {"image_size": [h, w], "boxes": [[x1, y1, x2, y2], ...], "scores",
// "class_ids", "class_names"} (score > threshold, in the graph's order: best score first).
//
// Everything the client needs besides the graph comes from the JSON sidecar beside the model
// (`model.onnx` -> `model.json`, schema 2), never from ONNX custom metadata (onnxruntime-node
// does not expose it). The preprocessing reproduces the Python runtime (`runtime.Detector`,
// Pillow): EXIF orientation, Pillow's fixed-point antialiased resize (bit-exact), rescale, the
// fused float32 normalisation, NCHW. JPEGs are decoded by jpeg-js, followed by libjpeg-turbo's
// chroma upsampling and YCbCr -> RGB: only the IDCT's rounding differs from Pillow's decoder.
//
// Testing hooks: --tensor FILE.f32 --orig-size W H (feed a raw float32 NCHW tensor),
// --dump-tensor FILE.f32 (write the tensor built), --rgb FILE.raw W H (raw RGB uint8 pixels
// instead of a JPEG, no EXIF), --no-run (with --dump-tensor: preprocess only),
// --resize-order pillow12 (Pillow 12's order of the two resize passes; default Pillow 13's).
//
// Importable: import { Detector, loadSidecar, decodeJpeg, resizeRGB, ... } from "./detect.mjs".

import { createHash } from "node:crypto";
import { existsSync, readFileSync, realpathSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

import jpeg from "jpeg-js";

export const SIDECAR_SCHEMA = 2;

/** A mistake of the caller (file, sidecar, image, arguments): the CLI exits 2 with one line. */
export class UserError extends Error {
  constructor(message) {
    super(message);
    this.name = "UserError";
  }
}

// --- sidecar ---------------------------------------------------------------------------------

/** `<stem>.json` beside `<stem>.onnx` (model.int8.onnx -> model.int8.json), as runtime.sidecar. */
export function sidecarPath(modelPath) {
  const parsed = path.parse(modelPath);
  return path.join(parsed.dir, `${parsed.name}.json`);
}

function sha256File(file) {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

/** Read and check the sidecar of `modelPath`; returns it with `preprocessing` normalised. */
export function loadSidecar(modelPath) {
  if (!existsSync(modelPath) || !statSync(modelPath).isFile()) {
    throw new UserError(`${modelPath}: no such model file`);
  }
  const file = sidecarPath(modelPath);
  if (!existsSync(file)) {
    throw new UserError(
      `${modelPath}: no sidecar ${file} (label map and preprocessing); ` +
        `\`python -m runtime.sidecar ${modelPath}\` writes it`,
    );
  }
  let sidecar;
  try {
    sidecar = JSON.parse(readFileSync(file, "utf8"));
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
  const actual = sha256File(modelPath);
  if (expected.toLowerCase() !== actual) {
    throw new UserError(
      `${file}: stale sidecar, it describes another export (model.sha256 ${expected.slice(0, 12)}..., ` +
        `${path.basename(modelPath)} is ${actual.slice(0, 12)}...); ` +
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

// --- JPEG decoding and EXIF orientation ------------------------------------------------------
//
// jpeg-js does the entropy decoding and the IDCT. What follows it is done here the way
// libjpeg-turbo (Pillow's decoder) does it, so that only the IDCT's rounding differs: the
// colour space is guessed like `default_decompress_parms` (jdapimin.c), subsampled chroma is
// upsampled with libjpeg's "fancy" triangle filters (jdsample.c; jpeg-js replicates samples)
// and YCbCr -> RGB uses libjpeg's fixed-point tables (jdcolor.c; jpeg-js truncates floats).

/**
 * The headers of a JPEG up to its first scan: `{orientation, frame, jfif, adobe, adobeSegments}`.
 * `orientation` is the EXIF Orientation (1-8) of the first APP1 Exif segment (1 when absent or
 * invalid, as PIL reads it); `frame` is the SOF's `{width, height, components: [{id, h, v}]}`.
 */
export function jpegHeaders(bytes) {
  const headers = { orientation: 1, frame: null, jfif: false, adobe: null, adobeSegments: [] };
  let sawExif = false;
  let pos = 2;
  while (pos + 4 <= bytes.length) {
    if (bytes[pos] !== 0xff) break;
    const marker = bytes[pos + 1];
    if (marker === 0xff) {
      pos += 1; // fill byte
      continue;
    }
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) {
      pos += 2;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) break; // first scan: the headers are over
    const length = (bytes[pos + 2] << 8) | bytes[pos + 3];
    const start = pos + 4;
    const end = Math.min(pos + 2 + length, bytes.length);
    const segment = bytes.subarray(start, end);
    const startsWith = (text) =>
      segment.length >= text.length && [...text].every((ch, i) => segment[i] === ch.charCodeAt(0));
    if (marker === 0xe0 && startsWith("JFIF\0")) {
      headers.jfif = true;
    } else if (marker === 0xe1 && !sawExif && startsWith("Exif\0\0")) {
      sawExif = true;
      headers.orientation = orientationFromTiff(segment.subarray(6));
    } else if (marker === 0xee && segment.length >= 12 && startsWith("Adobe")) {
      headers.adobe ??= { transform: segment[11] };
      headers.adobeSegments.push([pos, pos + 2 + length]);
    } else if (
      headers.frame === null &&
      marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc
    ) {
      const count = segment[5];
      const components = [];
      for (let i = 0; i < count && 6 + i * 3 + 2 < segment.length; i++) {
        const at = 6 + i * 3;
        components.push({ id: segment[at], h: segment[at + 1] >> 4, v: segment[at + 1] & 15 });
      }
      headers.frame = {
        precision: segment[0],
        height: (segment[1] << 8) | segment[2],
        width: (segment[3] << 8) | segment[4],
        components,
      };
    }
    pos += 2 + length;
  }
  return headers;
}

/** The EXIF Orientation (1-8) of a JPEG, 1 when absent or invalid. */
export function exifOrientation(bytes) {
  return jpegHeaders(bytes).orientation;
}

function orientationFromTiff(tiff) {
  if (tiff.length < 8) return 1;
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  const order = String.fromCharCode(tiff[0], tiff[1]);
  if (order !== "II" && order !== "MM") return 1;
  const little = order === "II";
  const u16 = (at) => view.getUint16(at, little);
  const u32 = (at) => view.getUint32(at, little);
  if (u16(2) !== 42) return 1;
  const ifd = u32(4);
  if (ifd + 2 > tiff.length) return 1;
  const count = u16(ifd);
  for (let i = 0; i < count; i++) {
    const entry = ifd + 2 + i * 12;
    if (entry + 12 > tiff.length) return 1;
    if (u16(entry) !== 0x0112) continue;
    const type = u16(entry + 2);
    // SHORT (3) as written by cameras; BYTE (1) and LONG (4) are read the same way by Pillow.
    const value = type === 3 ? u16(entry + 8) : type === 4 ? u32(entry + 8) : type === 1 ? tiff[entry + 8] : 1;
    return value >= 1 && value <= 8 ? value : 1;
  }
  return 1;
}

// libjpeg's YCbCr -> RGB tables (jdcolor.c, build_ycc_rgb_table): SCALEBITS 16.
const YCC = (() => {
  const FIX = (x) => Math.trunc(x * 65536 + 0.5);
  const crR = new Int32Array(256);
  const cbB = new Int32Array(256);
  const crG = new Int32Array(256);
  const cbG = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    const x = i - 128;
    crR[i] = (FIX(1.402) * x + 32768) >> 16;
    cbB[i] = (FIX(1.772) * x + 32768) >> 16;
    crG[i] = -FIX(0.71414) * x;
    cbG[i] = -FIX(0.34414) * x + 32768;
  }
  return { crR, cbB, crG, cbG };
})();

const clamp255 = (v) => (v < 0 ? 0 : v > 255 ? 255 : v);

/** A component's own samples, taken back from jpeg-js's sample-replicated full-size plane. */
function subsampledPlane(full, width, height, channel, channels, rx, ry) {
  const dw = Math.ceil(width / rx);
  const dh = Math.ceil(height / ry);
  const plane = new Uint8Array(dw * dh);
  for (let r = 0; r < dh; r++) {
    for (let c = 0; c < dw; c++) plane[r * dw + c] = full[((r * ry) * width + c * rx) * channels + channel];
  }
  return { plane, dw, dh };
}

/** libjpeg's fancy upsampling (jdsample.c) of one component into channel `channel` of `out`. */
function fancyUpsample(sub, rx, ry, width, height, out, channel, channels) {
  const { plane, dw, dh } = sub;
  const row = (r) => plane.subarray(r * dw, r * dw + dw);
  const put = (y, x, value) => {
    if (x < width) out[(y * width + x) * channels + channel] = value;
  };
  if (rx === 2 && ry === 1) {
    // h2v1_fancy_upsample (only when downsampled_width > 2)
    for (let y = 0; y < height; y++) {
      const inp = row(y);
      put(y, 0, inp[0]);
      put(y, 1, (inp[0] * 3 + inp[1] + 2) >> 2);
      for (let c = 1; c < dw - 1; c++) {
        const v = inp[c] * 3;
        put(y, 2 * c, (v + inp[c - 1] + 1) >> 2);
        put(y, 2 * c + 1, (v + inp[c + 1] + 2) >> 2);
      }
      const last = inp[dw - 1];
      put(y, 2 * dw - 2, (last * 3 + inp[dw - 2] + 1) >> 2);
      put(y, 2 * dw - 1, last);
    }
    return;
  }
  for (let y = 0; y < height; y++) {
    const r = y >> 1;
    const near = row(r);
    // The row above the first and below the last are the edge rows themselves (jdmainct.c).
    const far = row((y & 1) === 0 ? Math.max(r - 1, 0) : Math.min(r + 1, dh - 1));
    if (rx === 1) {
      // h1v2_fancy_upsample
      const bias = (y & 1) === 0 ? 1 : 2;
      for (let c = 0; c < dw; c++) put(y, c, (near[c] * 3 + far[c] + bias) >> 2);
      continue;
    }
    // h2v2_fancy_upsample (only when downsampled_width > 2)
    let thiscolsum = near[0] * 3 + far[0];
    let nextcolsum = near[1] * 3 + far[1];
    put(y, 0, (thiscolsum * 4 + 8) >> 4);
    put(y, 1, (thiscolsum * 3 + nextcolsum + 7) >> 4);
    let lastcolsum = thiscolsum;
    thiscolsum = nextcolsum;
    for (let c = 1; c < dw - 1; c++) {
      nextcolsum = near[c + 1] * 3 + far[c + 1];
      put(y, 2 * c, (thiscolsum * 3 + lastcolsum + 8) >> 4);
      put(y, 2 * c + 1, (thiscolsum * 3 + nextcolsum + 7) >> 4);
      lastcolsum = thiscolsum;
      thiscolsum = nextcolsum;
    }
    put(y, 2 * dw - 2, (thiscolsum * 3 + lastcolsum + 8) >> 4);
    put(y, 2 * dw - 1, (thiscolsum * 4 + 7) >> 4);
  }
}

function withoutSegments(bytes, segments) {
  if (!segments.length) return bytes;
  const parts = [];
  let from = 0;
  for (const [start, end] of segments) {
    parts.push(bytes.subarray(from, start));
    from = end;
  }
  parts.push(bytes.subarray(from));
  return Buffer.concat(parts);
}

/** Decode a JPEG into {width, height, data: RGB Uint8Array}, as Pillow does; grayscale -> RGB. */
export function decodeJpeg(bytes, source = "image") {
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) {
    throw new UserError(`${source}: not a JPEG file (this client decodes JPEG only)`);
  }
  const headers = jpegHeaders(bytes);
  const frame = headers.frame;
  const options = { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 1024 };
  const decode = (data, extra = {}) => {
    try {
      return jpeg.decode(data, { ...options, ...extra });
    } catch (err) {
      throw new UserError(`${source}: cannot decode JPEG (${err.message ?? err})`);
    }
  };
  if (frame === null || frame.components.length !== 3 || frame.precision !== 8) {
    // Grayscale (replicated to RGB by jpeg-js), CMYK/YCCK (jpeg-js's conversion: not Pillow's).
    const image = decode(bytes);
    return { width: image.width, height: image.height, data: image.data };
  }
  // libjpeg's guess of the colour space (jdapimin.c, default_decompress_parms).
  const ids = frame.components.map((c) => c.id).join(",");
  const isRGB = headers.jfif ? false : headers.adobe ? headers.adobe.transform === 0 : ids === "82,71,66";
  // jpeg-js converts whenever an Adobe marker asks for it: hide the marker to get the samples.
  const raw = decode(withoutSegments(bytes, headers.adobeSegments), { colorTransform: false });
  const { width, height } = raw;
  const data = raw.data; // the three components at full size, subsampled ones replicated
  const maxH = Math.max(...frame.components.map((c) => c.h));
  const maxV = Math.max(...frame.components.map((c) => c.v));
  frame.components.forEach((component, channel) => {
    if (maxH % component.h || maxV % component.v) return;
    const rx = maxH / component.h;
    const ry = maxV / component.v;
    const dw = Math.ceil((width * component.h) / maxH);
    const fancy = (rx === 2 && ry === 1 && dw > 2) || (rx === 2 && ry === 2 && dw > 2) || (rx === 1 && ry === 2);
    if (!fancy) return; // full size, or libjpeg's replication = jpeg-js's
    const sub = subsampledPlane(data, width, height, channel, 3, rx, ry);
    fancyUpsample(sub, rx, ry, width, height, data, channel, 3);
  });
  if (!isRGB) {
    const { crR, cbB, crG, cbG } = YCC;
    for (let i = 0; i < data.length; i += 3) {
      const y = data[i];
      const cb = data[i + 1];
      const cr = data[i + 2];
      data[i] = clamp255(y + crR[cr]);
      data[i + 1] = clamp255(y + ((cbG[cb] + crG[cr]) >> 16));
      data[i + 2] = clamp255(y + cbB[cb]);
    }
  }
  return { width, height, data };
}

/** Apply an EXIF orientation like PIL's `ImageOps.exif_transpose`. */
export function applyOrientation(image, orientation) {
  if (orientation === 1) return image;
  const { width: w, height: h, data } = image;
  const swap = orientation >= 5;
  const outW = swap ? h : w;
  const outH = swap ? w : h;
  // (x, y) of the output -> (column, row) of the input, as PIL's Image.transpose.
  const source = {
    2: (x, y) => [w - 1 - x, y], // FLIP_LEFT_RIGHT
    3: (x, y) => [w - 1 - x, h - 1 - y], // ROTATE_180
    4: (x, y) => [x, h - 1 - y], // FLIP_TOP_BOTTOM
    5: (x, y) => [y, x], // TRANSPOSE
    6: (x, y) => [y, h - 1 - x], // ROTATE_270 (90 clockwise)
    7: (x, y) => [w - 1 - y, h - 1 - x], // TRANSVERSE
    8: (x, y) => [w - 1 - y, x], // ROTATE_90 (90 counter-clockwise)
  }[orientation];
  const out = new Uint8Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const [sx, sy] = source(x, y);
      const from = (sy * w + sx) * 3;
      const to = (y * outW + x) * 3;
      out[to] = data[from];
      out[to + 1] = data[from + 1];
      out[to + 2] = data[from + 2];
    }
  }
  return { width: outW, height: outH, data: out };
}

/** Read a JPEG file as the Python runtime does: decode, then EXIF orientation. */
export function readImage(file, { exifTranspose = true } = {}) {
  if (!existsSync(file) || !statSync(file).isFile()) {
    throw new UserError(`${file}: no such image file`);
  }
  const bytes = readFileSync(file);
  const image = decodeJpeg(bytes, file);
  return exifTranspose ? applyOrientation(image, exifOrientation(bytes)) : image;
}

// --- Pillow's resampling (src/libImaging/Resample.c), 8 bits per channel ----------------------

const hammingA = Math.fround(0.54); // C: 0.54f + 0.46f * cos(x), floats promoted to double
const hammingB = Math.fround(0.46);

function sinc(x) {
  if (x === 0.0) return 1.0;
  x = x * Math.PI;
  return Math.sin(x) / x;
}

export const FILTERS = {
  box: {
    support: 0.5,
    fn: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0),
  },
  bilinear: {
    support: 1.0,
    fn: (x) => {
      if (x < 0.0) x = -x;
      return x < 1.0 ? 1.0 - x : 0.0;
    },
  },
  hamming: {
    support: 1.0,
    fn: (x) => {
      if (x < 0.0) x = -x;
      if (x === 0.0) return 1.0;
      if (x >= 1.0) return 0.0;
      x = x * Math.PI;
      return (Math.sin(x) / x) * (hammingA + hammingB * Math.cos(x));
    },
  },
  bicubic: {
    support: 2.0,
    fn: (x) => {
      const a = -0.5;
      if (x < 0.0) x = -x;
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
  lanczos: {
    support: 3.0,
    fn: (x) => (-3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0),
  },
};

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

/** `precompute_coeffs` + `normalize_coeffs_8bpc` for box (0, inSize): bounds and int32 weights. */
function precomputeCoeffs(inSize, outSize, filter) {
  const in0 = 0.0;
  const in1 = inSize;
  const scale = (in1 - in0) / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const invFilterscale = 1.0 / filterscale;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let ww = 0.0;
    let xmin = Math.trunc(center - support + 0.5); // C: (int) truncates toward zero
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      const w = filter.fn((x + xmin - center + 0.5) * invFilterscale);
      k[x] = w;
      ww += w;
    }
    if (ww !== 0.0) {
      for (let x = 0; x < xmax; x++) k[x] /= ww;
    }
    for (let x = 0; x < xmax; x++) {
      const v = k[x];
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss) {
  const v = ss >> PRECISION_BITS; // arithmetic shift, as C on int
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function horizontalPass(data, w, rows, rowOffset, outW, coeffs) {
  const { ksize, bounds, kk } = coeffs;
  const out = new Uint8Array(outW * rows * 3);
  for (let yy = 0; yy < rows; yy++) {
    const line = (yy + rowOffset) * w * 3;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      const kbase = xx * ksize;
      let ss0 = HALF;
      let ss1 = HALF;
      let ss2 = HALF;
      for (let x = 0; x < xmax; x++) {
        const p = line + (x + xmin) * 3;
        const c = kk[kbase + x];
        ss0 += data[p] * c;
        ss1 += data[p + 1] * c;
        ss2 += data[p + 2] * c;
      }
      const o = (yy * outW + xx) * 3;
      out[o] = clip8(ss0);
      out[o + 1] = clip8(ss1);
      out[o + 2] = clip8(ss2);
    }
  }
  return out;
}

function verticalPass(data, w, outH, coeffs, yShift) {
  const { ksize, bounds, kk } = coeffs;
  const out = new Uint8Array(w * outH * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2] - yShift;
    const ymax = bounds[yy * 2 + 1];
    const kbase = yy * ksize;
    for (let xx = 0; xx < w; xx++) {
      let ss0 = HALF;
      let ss1 = HALF;
      let ss2 = HALF;
      for (let y = 0; y < ymax; y++) {
        const p = ((y + ymin) * w + xx) * 3;
        const c = kk[kbase + y];
        ss0 += data[p] * c;
        ss1 += data[p + 1] * c;
        ss2 += data[p + 2] * c;
      }
      const o = (yy * w + xx) * 3;
      out[o] = clip8(ss0);
      out[o + 1] = clip8(ss1);
      out[o + 2] = clip8(ss2);
    }
  }
  return out;
}

/**
 * Resize an RGB image to outW x outH exactly as Pillow's `Image.resize((outW, outH), resample)`
 * does for 8-bit RGB (`ImagingResampleInner`): two separable passes with fixed-point weights
 * (22 fractional bits), each clipped to 0..255. Which pass runs first changes ~1/3 of the values
 * by one uint8 step, and Pillow changed it:
 * - `order: "pillow13"` (default; Pillow 13.0, python-pillow/Pillow#9549): vertical first when
 *   the height shrinks by more than twice as many pixels as the width
 *   (`outH < h && h - outH > 2 * (w - outW)`), else horizontal first (on the rows the vertical
 *   pass reads). Measured against Pillow 13.0.0 on ~1,800 random size pairs: no exception.
 * - `order: "pillow12"` (Pillow 12.x): horizontal first, except, from 12.2, for images taller
 *   than 100x their width whose height shrinks (Image.resize then runs vertical first).
 */
export function resizeRGB(image, outW, outH, resample = "bilinear", { order = "pillow13" } = {}) {
  const filter = FILTERS[resample];
  if (!filter) {
    throw new UserError(`resample ${JSON.stringify(resample)} is not supported (one of ${Object.keys(FILTERS).join(", ")})`);
  }
  const { width: w, height: h, data } = image;
  if (w === outW && h === outH) return image;
  const needHorizontal = outW !== w;
  const needVertical = outH !== h;
  let verticalFirst;
  if (order === "pillow13") verticalFirst = outH < h && h - outH > 2 * (w - outW);
  else if (order === "pillow12") verticalFirst = h > w * 100 && outH < h;
  else throw new Error(`unknown resize order ${order}`);
  const vert = needVertical ? precomputeCoeffs(h, outH, filter) : null;
  const horiz = needHorizontal ? precomputeCoeffs(w, outW, filter) : null;
  if (verticalFirst) {
    let out = data;
    if (needVertical) out = verticalPass(out, w, outH, vert, 0);
    if (needHorizontal) out = horizontalPass(out, w, outH, 0, outW, horiz);
    return { width: outW, height: outH, data: out };
  }
  let out = data;
  let rows = h;
  let first = 0;
  if (needHorizontal) {
    if (needVertical) {
      // Only the source rows the vertical pass reads (same result, less work).
      first = vert.bounds[0];
      rows = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1] - first;
    }
    out = horizontalPass(out, w, rows, first, outW, horiz);
  }
  if (needVertical) out = verticalPass(out, outW, outH, vert, first);
  return { width: outW, height: outH, data: out };
}

// --- tensor ----------------------------------------------------------------------------------

/** Per-channel float32 scale and offset, as `_scale_and_offset` in runtime/preprocessing.py. */
function scaleAndOffset(pre) {
  const factor = pre.doRescale ? pre.rescaleFactor : 1.0;
  if (!pre.doNormalize) return { scale: new Float32Array([factor, factor, factor]), offset: null };
  const scale = new Float32Array(3);
  const offset = new Float32Array(3);
  for (let c = 0; c < 3; c++) {
    scale[c] = factor / pre.imageStd[c]; // float64 division, rounded to float32 on store
    offset[c] = -pre.imageMean[c] / pre.imageStd[c];
  }
  return { scale, offset };
}

/** RGB image -> the `images` input: resize (`order`: see resizeRGB), x * scale (+ offset) in float32, NCHW. */
export function toTensor(image, pre, { order = "pillow13" } = {}) {
  let resized = image;
  if (pre.doResize && (image.width !== pre.width || image.height !== pre.height)) {
    resized = resizeRGB(image, pre.width, pre.height, pre.resample, { order });
  }
  if (resized.width !== pre.width || resized.height !== pre.height) {
    throw new UserError(
      `expected a ${pre.height}x${pre.width} image (the model's input size, do_resize is false), ` +
        `got ${resized.height}x${resized.width}`,
    );
  }
  const { scale, offset } = scaleAndOffset(pre);
  const plane = pre.height * pre.width;
  const tensor = new Float32Array(3 * plane);
  const { data } = resized;
  for (let c = 0; c < 3; c++) {
    const s = scale[c];
    const base = c * plane;
    for (let i = 0; i < plane; i++) tensor[base + i] = data[i * 3 + c] * s; // exact product, one rounding
    if (offset) {
      const o = offset[c];
      for (let i = 0; i < plane; i++) tensor[base + i] = tensor[base + i] + o; // float32 add
    }
  }
  return tensor;
}

// --- the detector ----------------------------------------------------------------------------

/** An exported model and its sidecar behind `detect(imageFile, threshold)`. */
export class Detector {
  static async create(modelPath, { threads = 1 } = {}) {
    const sidecar = loadSidecar(modelPath);
    let ort;
    try {
      ort = (await import("onnxruntime-node")).default;
    } catch (err) {
      throw new UserError(`cannot load onnxruntime-node (run \`npm ci --ignore-scripts\` here): ${err.message}`);
    }
    let session;
    try {
      session = await ort.InferenceSession.create(modelPath, {
        executionProviders: ["cpu"],
        graphOptimizationLevel: "all",
        executionMode: "sequential",
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
      });
    } catch (err) {
      throw new UserError(`${modelPath}: onnxruntime cannot load it (${String(err.message ?? err).split("\n")[0]})`);
    }
    const missing = [
      ...["images", "orig_target_sizes"].filter((n) => !session.inputNames.includes(n)),
      ...["labels", "boxes", "scores"].filter((n) => !session.outputNames.includes(n)),
    ];
    if (missing.length) {
      throw new UserError(`${modelPath}: not the exported contract (missing ${missing.join(", ")})`);
    }
    return new Detector(modelPath, sidecar, session, ort);
  }

  constructor(modelPath, sidecar, session, ort) {
    this.path = modelPath;
    this.sidecar = sidecar;
    this.preprocessing = sidecar.preprocessing;
    this.session = session;
    this.ort = ort;
  }

  /** A JPEG file -> {images: Float32Array, origSize: [width, height]}. */
  prepare(file) {
    return this.prepareRGB(readImage(file, { exifTranspose: this.preprocessing.exifTranspose }));
  }

  /** An RGB image {width, height, data} -> {images, origSize: [width, height]}. */
  prepareRGB(image) {
    return { images: toTensor(image, this.preprocessing), origSize: [image.width, image.height] };
  }

  /** `session.run` only: {labels: BigInt64Array, boxes: Float32Array, scores: Float32Array}. */
  async run(images, [width, height]) {
    const { height: h, width: w } = this.preprocessing;
    const feeds = {
      images: new this.ort.Tensor("float32", images, [1, 3, h, w]),
      orig_target_sizes: new this.ort.Tensor("int64", BigInt64Array.from([BigInt(width), BigInt(height)]), [1, 2]),
    };
    const out = await this.session.run(feeds, ["labels", "boxes", "scores"]);
    return { labels: out.labels.data, boxes: out.boxes.data, scores: out.scores.data };
  }

  /** Keep scores above `threshold` (compared in float32, as numpy does) and name the labels. */
  decode({ labels, boxes, scores }, [width, height], threshold = 0.5) {
    const limit = Math.fround(threshold);
    const result = { image_size: [height, width], boxes: [], scores: [], class_ids: [], class_names: [] };
    for (let i = 0; i < scores.length; i++) {
      if (!(scores[i] > limit)) continue;
      const id = Number(labels[i]);
      result.boxes.push(Array.from(boxes.subarray(i * 4, i * 4 + 4)));
      result.scores.push(scores[i]);
      result.class_ids.push(id);
      result.class_names.push(this.sidecar.id2label[String(id)] ?? String(id));
    }
    return result;
  }

  async detect(file, threshold = 0.5) {
    const { images, origSize } = this.prepare(file);
    return this.decode(await this.run(images, origSize), origSize, threshold);
  }
}

// --- command line ----------------------------------------------------------------------------

const USAGE =
  "usage: node detect.mjs MODEL.onnx IMAGE.jpg [--threshold 0.5] " +
  "[--dump-tensor FILE.f32] [--tensor FILE.f32 --orig-size W H] [--rgb FILE.raw W H] [--no-run] " +
  "[--resize-order pillow13|pillow12]";

function positiveInt(text, name) {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new UserError(`${name}: expected a positive integer, got ${text}`);
  return value;
}

export function parseArgs(argv) {
  const args = { positional: [], threshold: 0.5, tensor: null, origSize: null, dumpTensor: null, rgb: null, run: true, order: "pillow13" };
  const take = (i, n, flag) => {
    if (i + n >= argv.length) throw new UserError(`${flag} needs ${n} value${n > 1 ? "s" : ""}; ${USAGE}`);
    return argv.slice(i + 1, i + 1 + n);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--threshold") {
      const [value] = take(i, 1, arg);
      args.threshold = Number(value);
      if (value.trim() === "" || !(args.threshold >= 0 && args.threshold <= 1)) {
        throw new UserError(`--threshold: expected a number between 0 and 1, got ${value}`);
      }
      i += 1;
    } else if (arg === "--tensor" || arg === "--dump-tensor") {
      const [value] = take(i, 1, arg);
      args[arg === "--tensor" ? "tensor" : "dumpTensor"] = value;
      i += 1;
    } else if (arg === "--orig-size") {
      const [w, h] = take(i, 2, arg);
      args.origSize = [positiveInt(w, "--orig-size W"), positiveInt(h, "--orig-size H")];
      i += 2;
    } else if (arg === "--rgb") {
      const [file, w, h] = take(i, 3, arg);
      args.rgb = { file, width: positiveInt(w, "--rgb W"), height: positiveInt(h, "--rgb H") };
      i += 3;
    } else if (arg === "--resize-order") {
      const [value] = take(i, 1, arg);
      if (value !== "pillow13" && value !== "pillow12") {
        throw new UserError(`--resize-order: expected pillow13 or pillow12, got ${value}`);
      }
      args.order = value;
      i += 1;
    } else if (arg === "--no-run") {
      args.run = false;
    } else if (arg === "-h" || arg === "--help") {
      args.help = true;
    } else if (arg.startsWith("--")) {
      throw new UserError(`unknown option ${arg}; ${USAGE}`);
    } else {
      args.positional.push(arg);
    }
  }
  const sources = [args.positional.length > 1, args.tensor !== null, args.rgb !== null].filter(Boolean).length;
  if (!args.help && (args.positional.length < 1 || args.positional.length > 2 || sources !== 1)) {
    throw new UserError(`expected a model and one of IMAGE, --tensor or --rgb; ${USAGE}`);
  }
  if (args.tensor !== null && args.origSize === null) {
    throw new UserError("--tensor needs --orig-size W H (the original image's width and height)");
  }
  return args;
}

function readFileChecked(file, bytes, what) {
  if (!existsSync(file) || !statSync(file).isFile()) throw new UserError(`${file}: no such ${what} file`);
  const data = readFileSync(file);
  if (data.length !== bytes) {
    throw new UserError(`${file}: expected ${bytes} bytes for the ${what}, got ${data.length}`);
  }
  return data;
}

export async function main(argv) {
  const args = parseArgs(argv);
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return null;
  }
  const modelPath = args.positional[0];
  let detector;
  let pre;
  if (args.run) {
    detector = await Detector.create(modelPath, { threads: 1 });
    pre = detector.preprocessing;
  } else {
    pre = loadSidecar(modelPath).preprocessing;
  }
  let images;
  let origSize;
  if (args.tensor !== null) {
    const data = readFileChecked(args.tensor, 3 * pre.height * pre.width * 4, "float32 tensor");
    images = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
    origSize = args.origSize;
  } else {
    let image;
    if (args.rgb !== null) {
      const { file, width, height } = args.rgb;
      image = { width, height, data: new Uint8Array(readFileChecked(file, width * height * 3, "RGB")) };
    } else {
      image = readImage(args.positional[1], { exifTranspose: pre.exifTranspose });
    }
    images = toTensor(image, pre, { order: args.order });
    origSize = [image.width, image.height];
  }
  if (args.dumpTensor !== null) {
    writeFileSync(args.dumpTensor, new Uint8Array(images.buffer, images.byteOffset, images.byteLength));
  }
  if (!args.run) return null;
  const result = detector.decode(await detector.run(images, origSize), origSize, args.threshold);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return result;
}

function isMainModule() {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMainModule()) {
  main(process.argv.slice(2)).catch((err) => {
    if (err instanceof UserError) {
      process.stderr.write(`error: ${err.message.replace(/\s*\n\s*/g, " ")}\n`);
      process.exit(2);
    }
    process.stderr.write(`error: ${err.stack ?? err}\n`);
    process.exit(1);
  });
}
