// The exported model's contract around an onnxruntime session (onnxruntime-node or -web,
// passed in): inputs/outputs check, the graph feed, and the decoding of its outputs.

import { UserError } from "./errors.mjs";
import { toTensor } from "./tensor.mjs";

const INPUTS = ["images", "orig_target_sizes"];
const OUTPUTS = ["labels", "boxes", "scores"];

/** Refuse a session whose graph is not the exported contract. */
export function checkContract(session, modelPath) {
  const missing = [
    ...INPUTS.filter((n) => !session.inputNames.includes(n)),
    ...OUTPUTS.filter((n) => !session.outputNames.includes(n)),
  ];
  if (missing.length) {
    throw new UserError(`${modelPath}: not the exported contract (missing ${missing.join(", ")})`);
  }
}

/**
 * Keep scores above `threshold` (compared in float32, as numpy does) and name the labels:
 * the JSON both clients print (`image_size` is [height, width], boxes xyxy in pixels).
 */
export function decodeOutputs({ labels, boxes, scores }, [width, height], threshold, id2label) {
  const limit = Math.fround(threshold);
  const result = { image_size: [height, width], boxes: [], scores: [], class_ids: [], class_names: [] };
  for (let i = 0; i < scores.length; i++) {
    if (!(scores[i] > limit)) continue;
    const id = Number(labels[i]);
    result.boxes.push(Array.from(boxes.subarray(i * 4, i * 4 + 4)));
    result.scores.push(scores[i]);
    result.class_ids.push(id);
    result.class_names.push(id2label[String(id)] ?? String(id));
  }
  return result;
}

/** An exported model behind `run` and `decode`; the shells add how images and files are read. */
export class ModelRunner {
  constructor(modelPath, sidecar, session, ort) {
    this.path = modelPath;
    this.sidecar = sidecar;
    this.preprocessing = sidecar.preprocessing;
    this.session = session;
    this.ort = ort;
    checkContract(session, modelPath);
  }

  /** An RGB image {width, height, data} -> {images, origSize: [width, height]}. */
  prepareRGB(image, options = {}) {
    return { images: toTensor(image, this.preprocessing, options), origSize: [image.width, image.height] };
  }

  /** `session.run` only: {labels: BigInt64Array, boxes: Float32Array, scores: Float32Array}. */
  async run(images, [width, height]) {
    const { height: h, width: w } = this.preprocessing;
    const feeds = {
      images: new this.ort.Tensor("float32", images, [1, 3, h, w]),
      orig_target_sizes: new this.ort.Tensor("int64", BigInt64Array.from([BigInt(width), BigInt(height)]), [1, 2]),
    };
    const out = await this.session.run(feeds, OUTPUTS);
    return { labels: out.labels.data, boxes: out.boxes.data, scores: out.scores.data };
  }

  decode(outputs, origSize, threshold = 0.5) {
    return decodeOutputs(outputs, origSize, threshold, this.sidecar.id2label);
  }
}
