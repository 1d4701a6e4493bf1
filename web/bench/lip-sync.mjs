#!/usr/bin/env node
// Lip sync, end to end: a flash and a beep made at one instant at the
// source (web/bench/flash-beep.py: one pipeline, one clock, every 2 s),
// captured by the camera from shared memory as a camera and a microphone
// would be (two pipelines, each stamping what arrives), and timed where
// stock headless Chromium presents them: the flash by the display time of
// the first white frame (requestVideoFrameCallback), the beep by the output
// time of its first loud block (an AudioWorklet on the played stream,
// mapped to the same clock by getOutputTimestamp). A benchmark, not a test:
// it reports figures and judges nothing.
//
//   node web/bench/lip-sync.mjs [--flashes 15] [--bin PATH]
//
// Positive: the picture is shown after the sound (the sound is ahead).
import { spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

const ROOT = resolve(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "../..");
const { values: opts } = parseArgs({
  options: { flashes: { type: "string", default: "15" }, bin: { type: "string" } },
});
process.env.MESHCAM_BIN = opts.bin ?? process.env.MESHCAM_BIN ?? join(ROOT, "target/release/meshcam");
const { HEIGHT, WIDTH, cleanup, launchBrowser, onCleanup, startCameraWithPage, tempDir, waitDecoded, waitFor } =
  await import("../tests/harness.mjs");

const dir = tempDir("lip-sync");
const video = join(dir, "video");
const audio = join(dir, "audio");
const source = spawn("/usr/bin/python3", [join(ROOT, "web/bench/flash-beep.py"), "--video", video, "--audio", audio,
  "--width", String(WIDTH), "--height", String(HEIGHT)], { stdio: ["ignore", "pipe", "inherit"] });
onCleanup(() => source.kill("SIGKILL"));
await new Promise((ok, fail) => {
  createInterface({ input: source.stdout }).on("line", (line) => line.includes("ready") && ok());
  source.on("exit", (code) => fail(new Error(`flash-beep.py exited with ${code}`)));
});

const { camera, url } = await startCameraWithPage({
  id: "cam-lip-sync",
  room: "sync",
  video: [
    'source = "pipeline"',
    `pipeline = "shmsrc socket-path=${video} is-live=true do-timestamp=true ! video/x-raw,format=I420,width=${WIDTH},height=${HEIGHT},framerate=30/1"`,
    `width = ${WIDTH}`, `height = ${HEIGHT}`, "fps = 30", "bitrate_kbps = 800",
  ].join("\n"),
  toml: [
    "[audio]", 'source = "pipeline"',
    `pipeline = "shmsrc socket-path=${audio} is-live=true do-timestamp=true ! audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=1"`,
  ].join("\n"),
});
const browser = await launchBrowser();
const page = await browser.newPage();
await page.goto(url);
await waitDecoded(page, camera.id, 30);
// Sound plays once a user turns it on: Chromium syncs what it plays.
await page.locator(`.tile[data-peer="${camera.id}"] .speaker`).click();

await page.evaluate(async (id) => {
  const video = document.querySelector(`.tile[data-peer="${id}"] video`);
  window.flashes = [];
  window.beeps = [];
  // The flash: the display time of the first white frame after dark ones.
  const canvas = new OffscreenCanvas(16, 9);
  const draw = canvas.getContext("2d", { willReadFrequently: true });
  let white = false;
  const onFrame = (_now, meta) => {
    draw.drawImage(video, 0, 0, 16, 9);
    const pixels = draw.getImageData(0, 0, 16, 9).data;
    let sum = 0;
    for (let i = 0; i < pixels.length; i += 4) sum += pixels[i + 1];
    const bright = sum / (pixels.length / 4) > 128;
    if (bright && !white) window.flashes.push(meta.expectedDisplayTime);
    white = bright;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  // The beep: the context time of the first loud block, as performance time.
  const context = new AudioContext();
  const worklet = `registerProcessor("onset", class extends AudioWorkletProcessor {
    constructor() { super(); this.loud = false; }
    process(inputs) {
      const channel = inputs[0][0];
      if (!channel) return true;
      let peak = 0;
      for (const x of channel) peak = Math.max(peak, Math.abs(x));
      const loud = peak > 0.1;
      if (loud && !this.loud) this.port.postMessage(currentTime);
      this.loud = loud;
      return true;
    }
  });`;
  await context.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], { type: "text/javascript" })));
  const onset = new AudioWorkletNode(context, "onset");
  onset.port.onmessage = ({ data: contextTime }) => {
    const stamp = context.getOutputTimestamp();
    window.beeps.push(stamp.performanceTime + (contextTime - stamp.contextTime) * 1000);
  };
  context.createMediaStreamSource(video.srcObject).connect(onset).connect(context.destination);
  await context.resume();
}, camera.id);

const wanted = Number(opts.flashes);
await waitFor(`${wanted} flashes and beeps`, async () => {
  const { flashes, beeps } = await page.evaluate(() => ({ flashes: window.flashes.length, beeps: window.beeps.length }));
  return flashes >= wanted + 1 && beeps >= wanted + 1;
}, (wanted + 5) * 2000 + 10_000);
const { flashes, beeps } = await page.evaluate(() => ({ flashes: window.flashes, beeps: window.beeps }));
await cleanup();

// The first pair may be half seen; pair each later flash with its beep.
const offsets = flashes.slice(1).map((flash) => {
  const beep = beeps.reduce((best, b) => (Math.abs(b - flash) < Math.abs(best - flash) ? b : best));
  return Math.round((flash - beep) * 10) / 10;
}).filter((d) => Math.abs(d) < 1000);
const sorted = [...offsets].sort((a, b) => a - b);
console.log(JSON.stringify({
  event: "lip_sync",
  video_minus_audio_ms: {
    pairs: sorted.length, min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted.at(-1),
    worst: sorted.reduce((w, d) => (Math.abs(d) > Math.abs(w) ? d : w), 0),
  },
  offsets,
}));
process.exit(0);
