#!/usr/bin/env node
// Join → first decoded frame in stock headless Chromium, measured by the
// independent viewer page (web/tests/independent) against a real camera on
// Mosquitto's WebSockets listener. A benchmark, not a test: it reports
// figures and judges nothing.
//
//   node web/bench/first-frame.mjs [--tabs 8] [--rounds 3] [--runs 10] [--bin PATH]
//                                  [--camera meshcam|webrtcbin]
//
// --tabs N    tabs that join at once in each multi-tab round (one browser, a
//             context per tab)
// --rounds R  multi-tab rounds
// --runs K    single-tab runs, one after the other
// --bin PATH  camera binary (default: target/release/meshcam if built, else
//             target/debug/meshcam)
// --camera C  meshcam (default), or webrtcbin: web/bench/webrtcbin-camera.py,
//             a camera on GStreamer's webrtcbin speaking PROTOCOL.md with the
//             same video, to compare against
//
// Each tab loads the page first and joins when told, all tabs of a round in
// the same instant. Its figure is, in the page's own clock, from publishing
// its presence (right after the broker acknowledged its subscriptions) to the
// first decoded frame it sees (requestVideoFrameCallback, with getStats
// framesDecoded as a second witness). Between runs every tab leaves (bye,
// presence cleared) and the camera's status is back to 0 viewers.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const ROOT = resolve(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "../..");
const { values: opts } = parseArgs({
  options: {
    tabs: { type: "string", default: "8" },
    rounds: { type: "string", default: "3" },
    runs: { type: "string", default: "10" },
    bin: { type: "string" },
    camera: { type: "string", default: "meshcam" },
  },
});
if (!["meshcam", "webrtcbin"].includes(opts.camera)) throw new Error(`--camera ${opts.camera}: meshcam or webrtcbin`);
const TABS = Number(opts.tabs);
const ROUNDS = Number(opts.rounds);
const RUNS = Number(opts.runs);
const release = join(ROOT, "target/release/meshcam");
const bin = resolve(opts.bin ?? (existsSync(release) ? release : join(ROOT, "target/debug/meshcam")));

// The harness reads the binary from MESHCAM_BIN when it loads; the camera
// itself must not see that variable (it reads MESHCAM_* as configuration).
process.env.MESHCAM_BIN = bin;
const harness = await import("../tests/harness.mjs");
const driver = await import("../tests/independent/driver.mjs");
delete process.env.MESHCAM_BIN;
const { HEIGHT, WIDTH, launchChromium, onCleanup, runScript, startMosquitto, waitFor, withDeadline } = harness;
const { cameraInRoom, cameraOf, openViewer, serveIndependent, watchRoom } = driver;

const ROOM = "bench";
const DEADLINE_MS = 30_000;
const WEBRTCBIN = join(ROOT, "web/bench/webrtcbin-camera.py");

/** As driver.cameraInRoom, with the webrtcbin camera: ready once its presence is in the room. */
async function webrtcbinInRoom(room, id = "cam1") {
  const broker = await startMosquitto();
  const watch = await watchRoom(broker, room, id);
  const child = spawn("/usr/bin/python3", [WEBRTCBIN, "--broker", broker.url, "--room", room, "--id", id],
    { stdio: ["ignore", "ignore", "inherit"] });
  onCleanup(() => child.kill("SIGKILL"));
  await waitFor("the webrtcbin camera's presence", () => {
    if (child.exitCode !== null) throw new Error(`webrtcbin camera exited with ${child.exitCode}`);
    return watch.presence.json(`meshcam/rooms/${room}/peers/${id}`)?.role === "camera";
  }, DEADLINE_MS);
  return { broker, camera: { id, child }, ...watch };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const ms = (x) => (x === null || x === undefined ? "-" : String(Math.round(x)));

/** Opens `count` tabs, joins them at once, and returns each tab's timings. */
async function round(setup, count) {
  const viewers = [];
  for (let i = 0; i < count; i++) {
    viewers.push(await openViewer(setup.browser, setup.pageUrl, { broker: setup.broker.wsUrl, room: ROOM, manual: true }));
  }
  await Promise.all(viewers.map((v) => v.join()));
  const results = await Promise.all(viewers.map(async (v) => {
    // One call that returns on the first frame: polling eight pages would
    // take the CPU their first frames need.
    await withDeadline(`first frame in tab ${v.id}`, v.firstFrame(setup.camera.id), DEADLINE_MS);
    const state = await v.state();
    const { conn } = cameraOf(state, setup.camera.id);
    const t0 = state.joinAt;
    return {
      tab: v.id,
      firstFrame: conn.firstFrameAt - t0,
      offer: conn.offers[0].at - t0,
      ice: conn.iceConnectedAt === null ? null : conn.iceConnectedAt - t0,
      dtls: conn.connectedAt === null ? null : conn.connectedAt - t0,
      by: conn.firstFrameBy,
      generation: conn.generation,
    };
  }));
  await Promise.all(viewers.map((v) => v.leave()));
  await waitFor("the camera back to 0 viewers", () => setup.viewers() === 0, DEADLINE_MS);
  await Promise.all(viewers.map((v) => v.close()));
  return results;
}

function printTabs(title, rows) {
  console.log(`\n${title}`);
  console.log("| tab | join→offer ms | join→ICE connected ms | join→DTLS connected ms | join→first frame ms | seen by |");
  console.log("|---|---|---|---|---|---|");
  for (const r of rows) {
    console.log(`| ${r.tab} | ${ms(r.offer)} | ${ms(r.ice)} | ${ms(r.dtls)} | ${ms(r.firstFrame)} | ${r.by} |`);
  }
}

async function main() {
  const setup = opts.camera === "webrtcbin" ? await webrtcbinInRoom(ROOM) : await cameraInRoom(ROOM);
  setup.pageUrl = await serveIndependent();
  setup.browser = await launchChromium();
  console.log(`camera: ${opts.camera === "webrtcbin" ? WEBRTCBIN : bin}`);
  console.log(`video: ${WIDTH}x${HEIGHT} at 30 fps, 800 kbit/s, source "test"; Chromium ${setup.browser.version()}`);

  const summary = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const rows = await round(setup, TABS);
    const ff = rows.map((x) => x.firstFrame);
    printTabs(`${TABS} tabs at once, round ${r}: median ${ms(median(ff))} ms, worst ${ms(Math.max(...ff))} ms`, rows);
    summary.push({ what: `${TABS} tabs, round ${r}`, median: median(ff), worst: Math.max(...ff) });
  }

  const single = [];
  for (let r = 1; r <= RUNS; r++) {
    const [row] = await round(setup, 1);
    single.push(row);
  }
  const ff = single.map((x) => x.firstFrame);
  printTabs(`1 tab, ${RUNS} runs one after the other: median ${ms(median(ff))} ms, worst ${ms(Math.max(...ff))} ms`,
    single.map((x, i) => ({ ...x, tab: `run ${i + 1}` })));

  console.log("\nsummary");
  console.log("| what | median ms | worst ms |");
  console.log("|---|---|---|");
  for (const s of summary) console.log(`| ${s.what} | ${ms(s.median)} | ${ms(s.worst)} |`);
  console.log(`| 1 tab, ${RUNS} runs | ${ms(median(ff))} | ${ms(Math.max(...ff))} |`);
  console.log(`1 tab, every run: ${ff.map(ms).join(", ")} ms`);
}

await runScript("first-frame", main);
