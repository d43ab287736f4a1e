// JPEG decoding as Pillow does it, and EXIF orientation, on bytes only (platform-free).
//
// The entropy decoding and the IDCT are jpeg-js's (`decode` is passed in: Node imports the
// package, the page loads its classic script). What follows it is done here the way
// libjpeg-turbo (Pillow's decoder) does it, so that only the IDCT's rounding differs: the
// colour space is guessed like `default_decompress_parms` (jdapimin.c), subsampled chroma is
// upsampled with libjpeg's "fancy" triangle filters (jdsample.c; jpeg-js replicates samples)
// and YCbCr -> RGB uses libjpeg's fixed-point tables (jdcolor.c; jpeg-js truncates floats).

import { UserError } from "./errors.mjs";


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
  const out = new Uint8Array(bytes.length - segments.reduce((n, [start, end]) => n + end - start, 0));
  let from = 0;
  let at = 0;
  for (const [start, end] of segments) {
    out.set(bytes.subarray(from, start), at);
    at += start - from;
    from = end;
  }
  out.set(bytes.subarray(from), at);
  return out;
}

/**
 * Decode a JPEG into {width, height, data: RGB Uint8Array}, as Pillow does; grayscale -> RGB.
 * `jpegDecode` is jpeg-js's `decode` (its default export in Node, `window["jpeg-js"].decode` in
 * a page); `source` names the image in errors.
 */
export function decodeJpeg(bytes, source, jpegDecode) {
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) {
    throw new UserError(`${source}: not a JPEG file (this client decodes JPEG only)`);
  }
  const headers = jpegHeaders(bytes);
  const frame = headers.frame;
  const options = { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 1024 };
  const decode = (data, extra = {}) => {
    try {
      return jpegDecode(data, { ...options, ...extra });
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

