#!/usr/bin/env node
// Drive the page in a headless Chromium that is already installed (playwright-core, no browser
// download): for tests/test_web_page.py and timing runs, not needed to use the page.
//
//   node drive.mjs JOBS.json OUT.json
//
// JOBS.json: {"chromium": PATH, "pages": [{"url", "evaluate": [{"name", "fn" | "helper", "arg"}],
//   "upload": {"file", "screenshot"}, "slider": 0.3}]}. Each page is opened in a fresh context
// and waited for until `document.body.dataset.ready` is set ("1" loaded, "error"). `fn` is the
// source of an async function of `arg`, run in the page (e.g. on window.detector); `helper`
// names one of HELPERS below. `upload` picks a file with the page's own file input, waits for
// the drawing, then screenshots it;
// `webcam` clicks the webcam button (a fake camera); `slider` then moves the threshold slider.
// OUT.json gets, per page: ready, status, model, timings (after upload, webcam, slider) and
// results by name.

import { readFileSync, writeFileSync } from "node:fs";
import process from "node:process";

import { chromium } from "playwright-core";

const [jobsFile, outFile] = process.argv.slice(2);
const jobs = JSON.parse(readFileSync(jobsFile, "utf8"));
const browser = await chromium.launch({
  executablePath: jobs.chromium,
  args: ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"],
});
const text = (page, id) => page.locator(`#${id}`).textContent();

// Run in the page with `{"helper": NAME, "arg"}` (instead of "fn"): the tests' measurements.
const HELPERS = {
  // A float32 tensor per case from the server -> detectTensor's JSON.
  tensors: async (cases) => {
    const out = [];
    for (const c of cases) {
      const images = new Float32Array(await (await fetch(c.url)).arrayBuffer());
      out.push(await window.detector.detectTensor(images, c.orig_size, c.threshold));
    }
    return out;
  },
  // One JPEG URL through both decoders: jpeg-js (bytes) and Chromium's (an <img>).
  decoders: async ({ url, threshold }) => {
    const enc = (a) => window.encodeBase64(a);
    const img = new Image();
    img.src = url;
    await img.decode();
    const bytes = await window.detector.prepare(url);
    const drawn = await window.detector.prepare(img);
    return {
      jpegjs: enc(bytes.images),
      browser: enc(drawn.images),
      decoders: [bytes.decoder, drawn.decoder],
      detect: await window.detector.detect(url, threshold),
      detectImg: await window.detector.detect(img, threshold),
    };
  },
  // The decoded RGB pixels of an image.
  pixels: async (url) => {
    const { image } = await window.detector.pixels(url);
    return { width: image.width, height: image.height, rgb: window.encodeBase64(image.data) };
  },
  detect: async ({ url, threshold }) => window.detector.detect(url, threshold),
};

/** A typed array's bytes as base64 (defined in the page before the helpers run). */
function encodeBase64(array) {
  const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return btoa(text);
}
const out = [];
try {
  for (const job of jobs.pages) {
    const context = await browser.newContext({ viewport: { width: 900, height: 900 } });
    const page = await context.newPage();
    const console = [];
    page.on("console", (message) => console.push(`${message.type()}: ${message.text()}`));
    page.on("pageerror", (err) => console.push(`pageerror: ${err.message}`));
    await page.goto(job.url);
    await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 120_000 });
    const result = { ready: await page.evaluate(() => document.body.dataset.ready), results: {}, console };
    await page.evaluate(`window.encodeBase64 = ${encodeBase64.toString()}`);
    for (const { name, fn, helper, arg } of job.evaluate ?? []) {
      const source = helper ? HELPERS[helper].toString() : fn;
      result.results[name] = await page.evaluate(([code, value]) => (0, eval)(`(${code})`)(value), [source, arg ?? null]);
    }
    if (job.upload) {
      await page.locator("#timings").evaluate((node) => (node.textContent = ""));
      await page.locator("#file").setInputFiles(job.upload.file);
      await page.waitForFunction(
        () => document.getElementById("timings").textContent || document.getElementById("status").className,
      );
      result.uploadTimings = await text(page, "timings");
      result.uploadStatus = await text(page, "status");
      if (job.upload.screenshot) await page.screenshot({ path: job.upload.screenshot, fullPage: true });
      result.canvas = await page.evaluate(() => {
        const canvas = document.getElementById("canvas");
        if (!canvas.width || !canvas.height) return null;
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let binary = "";
        for (let i = 0; i < data.length; i += 4) binary += String.fromCharCode(data[i], data[i + 1], data[i + 2]);
        return { width: canvas.width, height: canvas.height, rgb: btoa(binary) };
      });
    }
    if (job.webcam) {
      // Chromium's fake camera (--use-fake-device-for-media-stream): frames through the browser's pixels.
      await page.locator("#webcam").click();
      await page.waitForFunction(() => document.getElementById("timings").textContent.includes("(browser)"));
      result.webcamTimings = await text(page, "timings");
    }
    if (job.slider !== undefined) {
      const before = await text(page, "timings");
      await page.locator("#threshold").fill(String(job.slider));
      await page.waitForFunction((old) => document.getElementById("timings").textContent !== old, before);
      result.sliderTimings = await text(page, "timings");
    }
    result.status = await text(page, "status");
    result.model = await text(page, "model");
    out.push(result);
    await context.close();
  }
} finally {
  await browser.close();
}
writeFileSync(outFile, JSON.stringify(out));
