// Pillow's resampling (src/libImaging/Resample.c) for 8-bit RGB, bit-exact, and the `images`
// tensor (rescale, fused float32 normalisation, NCHW) as runtime/preprocessing.py builds it.

import { UserError } from "./errors.mjs";

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
