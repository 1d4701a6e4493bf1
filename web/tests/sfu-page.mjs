// The viewer page in headless Chromium, for tests/sfu.rs, which runs it
// inside the viewers' network namespace: opens `url`, waits until the page
// decodes `frames` frames of `camera` through the SFU, and prints one JSON
// line of what it saw (or of what it did not). Not a test of its own: the
// camera, the broker and Janus are the Rust test's.
import { cleanup, launchBrowser, peerState, waitFor } from "./harness.mjs";

const [url, camera, frames = "30"] = process.argv.slice(2);
let code = 0;
try {
  const browser = await launchBrowser();
  const page = await browser.newPage();
  await page.goto(url);
  const state = await waitFor(`${camera} decoded via the SFU`, async () => {
    const s = await peerState(page, camera);
    return s?.via === "sfu" && s.framesDecoded >= Number(frames) ? s : null;
  }, 60_000);
  const badge = await page.locator(`.tile[data-peer="${camera}"] .badge`).textContent();
  console.log(JSON.stringify({ event: "decoded", state, badge }));
} catch (e) {
  console.log(JSON.stringify({ event: "error", error: String(e.message || e) }));
  code = 1;
} finally {
  await cleanup();
}
process.exit(code);
