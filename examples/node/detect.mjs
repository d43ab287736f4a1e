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
// This file is the Node shell (files, sha256, onnxruntime-node, the command line); the checks,
// the decoding, the resize and the output decoding are the platform-free core in
// ../web/core/, shared with the browser page (../web/), which a static server can only serve
// from inside its own folder.
//
// Importable: import { Detector, loadSidecar, decodeJpeg, resizeRGB, ... } from "./detect.mjs".

import { createHash } from "node:crypto";
import { existsSync, readFileSync, realpathSync, statSync, writeFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";

import jpeg from "jpeg-js";

import {
  ModelRunner,
  UserError,
  applyOrientation,
  checkSidecar,
  decodeJpeg as decodeJpegWith,
  exifOrientation,
  firstLine,
  missingSidecar,
  sidecarPath,
  toTensor,
} from "../web/core/index.mjs";

export * from "../web/core/index.mjs";

// --- files -----------------------------------------------------------------------------------

function sha256File(file) {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

/** Read and check the sidecar of `modelPath`; returns it with `preprocessing` normalised. */
export function loadSidecar(modelPath) {
  if (!existsSync(modelPath) || !statSync(modelPath).isFile()) {
    throw new UserError(`${modelPath}: no such model file`);
  }
  const file = sidecarPath(modelPath);
  if (!existsSync(file)) throw missingSidecar(modelPath, file);
  return checkSidecar(readFileSync(file, "utf8"), { file, modelPath, sha256: sha256File(modelPath) });
}

/** Decode a JPEG's bytes with jpeg-js into RGB, as Pillow does (see ../web/core/jpeg.mjs). */
export function decodeJpeg(bytes, source = "image") {
  return decodeJpegWith(bytes, source, jpeg.decode);
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

// --- the detector ----------------------------------------------------------------------------

/** An exported model and its sidecar behind `detect(imageFile, threshold)`, on onnxruntime-node. */
export class Detector extends ModelRunner {
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
      throw new UserError(`${modelPath}: onnxruntime cannot load it (${firstLine(err)})`);
    }
    return new Detector(modelPath, sidecar, session, ort);
  }

  /** A JPEG file -> {images: Float32Array, origSize: [width, height]}. */
  prepare(file) {
    return this.prepareRGB(readImage(file, { exifTranspose: this.preprocessing.exifTranspose }));
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
