#!/usr/bin/env node
// How closely stock headless Chromium plays the camera's picture and sound
// together, by its own account: the `estimatedPlayoutTimestamp` of the video
// and of the audio inbound-rtp stats (the NTP time of what each track plays
// now, from the RTP timestamps and the camera's sender reports), read in one
// getStats() call, every 500 ms. A benchmark, not a test: it reports figures
// and judges nothing.
//
//   node web/bench/av-sync.mjs [--samples 40] [--bin PATH]
//
// What it measures is the residual of the browser's own lip sync, which
// needs both tracks' sender reports on one clock; it cannot see an offset
// already in the timestamps (sound captured later than the picture but
// stamped as simultaneous): that takes a flash and a beep at a known
// instant, which this does not have.
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const ROOT = resolve(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "../..");
const { values: opts } = parseArgs({
  options: { samples: { type: "string", default: "40" }, bin: { type: "string" } },
});
// The harness reads the camera binary when it is loaded.
process.env.MESHCAM_BIN = opts.bin ?? process.env.MESHCAM_BIN ?? join(ROOT, "target/release/meshcam");
const { cleanup, launchBrowser, startCameraWithPage, waitDecoded } = await import("../tests/harness.mjs");

const { camera, url } = await startCameraWithPage({ room: "sync" });
const browser = await launchBrowser();
const page = await browser.newPage();
// The page keeps its connections to itself: remember them as they are made.
await page.addInitScript(() => {
  const Original = window.RTCPeerConnection;
  window.benchConnections = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) {
      super(...args);
      window.benchConnections.push(this);
    }
  };
});
await page.goto(url);
await waitDecoded(page, camera.id, 60);
// The sound plays once a user turns it on.
await page.locator(`.tile[data-peer="${camera.id}"] .speaker`).click();
await new Promise((r) => setTimeout(r, 3000));
const offsets = [];
for (let i = 0; i < Number(opts.samples); i++) {
  const playout = await page.evaluate(async () => {
    const report = await window.benchConnections.at(-1).getStats();
    const out = {};
    report.forEach((s) => {
      if (s.type === "inbound-rtp") out[s.kind] = s.estimatedPlayoutTimestamp;
    });
    return out;
  });
  if (playout.audio && playout.video) offsets.push(playout.video - playout.audio);
  await new Promise((r) => setTimeout(r, 500));
}
await cleanup();
offsets.sort((a, b) => a - b);
const at = (q) => offsets[Math.min(offsets.length - 1, Math.floor(q * offsets.length))];
console.log(JSON.stringify({
  event: "av_sync",
  // Positive: the picture being shown is later in capture time than the
  // sound being played (the sound is behind).
  video_minus_audio_ms: { samples: offsets.length, min: offsets[0], median: at(0.5), p90: at(0.9), max: offsets.at(-1) },
}));
process.exit(0);
