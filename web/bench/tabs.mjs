#!/usr/bin/env node
// Chromium tabs as receivers of one camera, for `meshcam bench --receiver
// chromium|mixed` (src/tools/receivers/chromium.rs): stock headless
// Chromium (Debian's, launched as an outside viewer runs it), a browser
// context per tab, each on the independent viewer page (web/tests/independent)
// joined to a room on a broker the caller runs. It judges nothing; it says
// what each tab sees, as JSON lines on stdout, until SIGTERM (then every
// tab leaves: bye, presence cleared):
//
//   {"event":"joined","tab":ID}
//   {"event":"first_frame","tab":ID,"ms":M}   join → first decoded frame, page clock
//   {"event":"report","tab":ID,"frames":F,"offers":O,"connections":C,"presented":P,"gap_ms":G,"t":T}
//       every --interval seconds: F frames decoded on all its connections
//       (getStats framesDecoded), O offers received (re-offers included),
//       C connections made, P frames presented, G the longest wait between
//       two presented frames since its previous report
//       (requestVideoFrameCallback), T seconds since this script started
//
//   node web/bench/tabs.mjs --broker ws://127.0.0.1:PORT --room R --camera CAM
//                           --ids tab-0,tab-1 [--interval 1]
import { parseArgs } from "node:util";
import { launchChromium, onCleanup, runScript, withDeadline } from "../tests/harness.mjs";
import { cameraOf, openViewer, serveIndependent } from "../tests/independent/driver.mjs";

const { values: opts } = parseArgs({
  options: {
    broker: { type: "string" },
    room: { type: "string" },
    camera: { type: "string" },
    ids: { type: "string" },
    interval: { type: "string", default: "1" },
  },
});
for (const key of ["broker", "room", "camera", "ids"]) {
  if (!opts[key]) throw new Error(`--${key} is required`);
}
const IDS = opts.ids.split(",");
const INTERVAL_MS = Number(opts.interval) * 1000;
/** A tab that has no first frame by then is reported and left waiting. */
const FIRST_FRAME_MS = 60_000;

const say = (line) => console.log(JSON.stringify(line));

/** Waits for the tab's first frame and says when it came, in the page's clock. */
async function firstFrame(tab) {
  try {
    await withDeadline(`first frame in tab ${tab.id}`, tab.firstFrame(opts.camera), FIRST_FRAME_MS);
    const state = await tab.state();
    const { conn } = cameraOf(state, opts.camera);
    say({ event: "first_frame", tab: tab.id, ms: conn.firstFrameAt - state.joinAt });
  } catch (e) {
    console.error(`tabs: ${e.message}`);
  }
}

async function report(tab) {
  try {
    const f = await tab.frames(opts.camera);
    say({
      event: "report", tab: tab.id, frames: f.decoded, offers: f.offers,
      connections: f.connections, presented: f.presented, gap_ms: Math.round(f.gapMs * 10) / 10,
      t: Math.round(performance.now()) / 1000,
    });
  } catch {
    // The camera is not known to the tab yet.
  }
}

async function main() {
  const pageUrl = await serveIndependent();
  const browser = await launchChromium();
  const tabs = [];
  // Leave before the browser closes (cleanups run newest first).
  onCleanup(() => Promise.all(tabs.map((t) => withDeadline(`tab ${t.id} leaving`, t.leave(), 5000).catch(() => {}))));
  for (const id of IDS) {
    const tab = await openViewer(browser, pageUrl, { broker: opts.broker, room: opts.room, id });
    tabs.push(tab);
    say({ event: "joined", tab: id });
    firstFrame(tab);
  }
  let stopped = false;
  onCleanup(() => { stopped = true; });
  while (!stopped) {
    const next = Date.now() + INTERVAL_MS;
    await Promise.all(tabs.map(report));
    await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
  }
}

await runScript("tabs", main);
