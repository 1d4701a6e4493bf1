#!/usr/bin/env node
// Talking back, measured: mouth to speaker and the camera's CPU while a
// viewer talks. A benchmark, not a test: it reports figures and judges
// nothing.
//
//   node web/bench/talk.mjs [--bursts 20] [--cpu-seconds 15] [--bin PATH]
//
// Stock headless Chromium opens the page and takes the floor (a tap). Its
// "microphone" is a tone made in the page (WebAudio, no microphone
// processing), silent until a burst starts: the burst's start is read on
// the wall clock in the page, its first sample at the camera's speaker on
// the same clock here. The speaker is a pipeline sink that writes what it
// plays when it plays it (sync=true, as a sound card takes it) to a file
// polled every millisecond: its first loud sample's time is when the sink
// wrote it, plus its place in what was written.
//
// CPU: the camera's user+system time over `--cpu-seconds`, with the viewer
// watching and not talking, then with it talking (the tone on).
import { closeSync, fstatSync, openSync, readFileSync, readSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const ROOT = resolve(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "../..");
const { values: opts } = parseArgs({
  options: {
    bursts: { type: "string", default: "20" },
    "cpu-seconds": { type: "string", default: "15" },
    bin: { type: "string" },
  },
});
process.env.MESHCAM_BIN = opts.bin ?? process.env.MESHCAM_BIN ?? join(ROOT, "target/release/meshcam");
const { cleanup, launchBrowser, peerState, startCameraWithPage, tempDir, waitDecoded, waitFor } =
  await import("../tests/harness.mjs");

const RATE = 48_000;
/** A sample this loud (of full scale) is the burst. */
const ONSET = 0.05;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const dir = tempDir("talk-bench");
const played = join(dir, "played.raw");
const { camera, url } = await startCameraWithPage({
  id: "cam-talk-bench",
  room: "bench",
  toml: [
    "[speaker]", 'sink = "pipeline"',
    `pipeline = "audioconvert ! audio/x-raw,format=S16LE,channels=1,rate=${RATE} ! filesink sync=true buffer-mode=unbuffered location=${played}"`,
  ].join("\n"),
});
const browser = await launchBrowser();
const page = await browser.newPage();
// The page's microphone: a 660 Hz tone behind a gain, 0 until a burst.
await page.addInitScript(() => {
  navigator.mediaDevices.getUserMedia = async () => {
    const context = new AudioContext();
    const tone = context.createOscillator();
    tone.frequency.value = 660;
    const gain = context.createGain();
    gain.gain.value = 0;
    const out = context.createMediaStreamDestination();
    tone.connect(gain).connect(out);
    tone.start();
    await context.resume();
    window.benchTone = (on) => {
      gain.gain.setValueAtTime(on ? 0.5 : 0, context.currentTime);
      return performance.timeOrigin + performance.now();
    };
    return out.stream;
  };
});
await page.goto(`${url}&id=web-bench&name=Bench`);
await waitDecoded(page, camera.id, 30);

/** The camera's CPU time so far, in seconds (user + system). */
function cpuSeconds() {
  const fields = readFileSync(`/proc/${camera.child.pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
async function cpuPercent(seconds) {
  const before = cpuSeconds();
  await sleep(seconds * 1000);
  return Math.round(((cpuSeconds() - before) / seconds) * 1000) / 10;
}

const cpuSecondsWanted = Number(opts["cpu-seconds"]);
const watching = await cpuPercent(cpuSecondsWanted);

await page.locator(`.tile[data-peer="${camera.id}"] .talk`).click();
await waitFor("the floor", async () => (await peerState(page, camera.id))?.talk?.state === "talking");

const fd = openSync(played, "r");
let offset = fstatSync(fd).size;
/** Polls the speaker's file until a loud sample; its time on the wall clock. */
async function onset(deadlineMs) {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    const size = fstatSync(fd).size;
    if (size > offset) {
      const seen = performance.timeOrigin + performance.now();
      const chunk = Buffer.alloc(size - offset);
      readSync(fd, chunk, 0, chunk.length, offset);
      offset = size;
      for (let i = 0; i + 1 < chunk.length; i += 2) {
        if (Math.abs(chunk.readInt16LE(i)) / 32768 > ONSET) return seen + ((i / 2) / RATE) * 1000;
      }
    }
    await sleep(1);
  }
  return null;
}
/** Polls until the speaker has written `ms` of silence in a row. */
async function quiet(ms) {
  let run = 0;
  while (run < (ms / 1000) * RATE) {
    await sleep(5);
    const size = fstatSync(fd).size;
    if (size <= offset) continue;
    const chunk = Buffer.alloc(size - offset);
    readSync(fd, chunk, 0, chunk.length, offset);
    offset = size;
    for (let i = 0; i + 1 < chunk.length; i += 2) {
      run = Math.abs(chunk.readInt16LE(i)) / 32768 > ONSET ? 0 : run + 1;
    }
  }
}

const delays = [];
await quiet(300);
for (let i = 0; i < Number(opts.bursts); i++) {
  const started = await page.evaluate(() => window.benchTone(true));
  const heard = await onset(5000);
  await page.evaluate(() => window.benchTone(false));
  if (heard !== null) delays.push(heard - started);
  await quiet(300);
}
closeSync(fd);

await page.evaluate(() => window.benchTone(true));
const talking = await cpuPercent(cpuSecondsWanted);
await cleanup();

delays.sort((a, b) => a - b);
const round = (x) => Math.round(x * 10) / 10;
console.log(JSON.stringify({
  event: "talk",
  mouth_to_speaker_ms: {
    bursts: delays.length, min: round(delays[0]), median: round(delays[Math.floor(delays.length / 2)]),
    max: round(delays.at(-1)),
  },
  camera_cpu_percent: { watching, talking, talk_path: round(talking - watching) },
}));
process.exit(0);
