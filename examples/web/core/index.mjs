// The platform-free client core shared by the Node client (examples/node/detect.mjs) and the
// page (examples/web/): no file system, no network, no DOM; the shells pass in bytes, text,
// a sha256, jpeg-js's `decode` and an onnxruntime module.

export { UserError, firstLine } from "./errors.mjs";
export {
  SIDECAR_SCHEMA, baseName, browserVerdict, checkSidecar, missingSidecar, sidecarPath, webRuntimeName,
} from "./sidecar.mjs";
export { applyOrientation, decodeJpeg, exifOrientation, jpegHeaders } from "./jpeg.mjs";
export { FILTERS, resizeRGB, toTensor } from "./tensor.mjs";
export { sha256Hex } from "./sha256.mjs";
export { ModelRunner, checkContract, decodeOutputs } from "./detector.mjs";
