// End-to-end: the viewer page in real headless Chromium against the real
// daemon, through Mosquitto's WebSockets listener and through the daemon's
// own embedded broker. Run by scripts/test after `cargo build`.
import { after, afterEach, test } from "node:test";
import assert from "node:assert/strict";
import {
  HEIGHT, PAGE_URL, WIDTH, cleanup, command, figure, launchBrowser, observe, peerState, screenshot,
  startCamera, startCameraWithPage, waitDecoded, waitFor,
} from "./harness.mjs";

afterEach(cleanup);
after(cleanup);

/** A camera on Mosquitto in `room`, serving the page, which uses Mosquitto's WebSockets. */
async function cameraOnMosquitto(room) {
  const { broker, camera, url } = await startCameraWithPage({ room });
  const status = await observe(broker.url, `meshcam/devices/${camera.id}/status`);
  return { broker, camera, url, status };
}

/** Opens the page and waits until it has decoded 60 frames of `camera`. */
async function watch(browser, url, camera) {
  const page = await browser.newPage();
  await page.goto(url);
  const state = await waitDecoded(page, camera, 60);
  const { firstFrameMs } = await peerState(page, camera);
  return { page, state, firstFrameMs };
}

function viewersOf(status, camera) {
  return status.json(`meshcam/devices/${camera.id}/status`)?.viewers;
}

test("a: the page plays the camera, picture and sound, through Mosquitto's WebSockets listener", async () => {
  const { camera, url } = await cameraOnMosquitto("lobby");
  assert.match(url, /\?room=lobby$/);
  const browser = await launchBrowser();
  const { page, state, firstFrameMs } = await watch(browser, url, camera.id);
  assert.equal(state.videoWidth, WIDTH);
  assert.ok(state.fps > 0, `fps ${state.fps}`);
  // The camera's test tone arrives in the same stream, muted until the
  // speaker button is pressed; then the tile's meter hears it at its pitch
  // and level (volume 0.3: -13.5 dBFS).
  const speaker = page.locator(`.tile[data-peer="${camera.id}"] .speaker`);
  assert.equal(await speaker.textContent(), "sound off");
  await speaker.click();
  assert.equal(await page.locator(`.tile[data-peer="${camera.id}"] video`).evaluate((v) => v.muted), false);
  const heard = await waitFor("Chromium playing the camera's 440 Hz tone", async () => {
    const s = await peerState(page, camera.id);
    return s?.audioPackets > 50 && Math.abs(s.sound?.hz - 440) <= 10 ? s.sound : null;
  });
  assert.ok(Math.abs(heard.db - -13.5) <= 3, `level ${heard.db} dBFS`);
  figure("mosquitto.first_frame_ms", firstFrameMs);
  figure("mosquitto.fps", state.fps);
});

test("b: standalone: the daemon's embedded broker and page, nothing else", async () => {
  const camera = await startCamera({
    toml: '[broker]\nlisten = "127.0.0.1:0"\nws_listen = "127.0.0.1:0"\n[web]\nlisten = "127.0.0.1:0"',
  });
  const [, url] = await camera.waitLog(PAGE_URL);
  assert.match(url, /\?room=home$/, "a standalone camera joins room home");
  const browser = await launchBrowser();
  const { page, state, firstFrameMs } = await watch(browser, url, camera.id);
  assert.equal(state.videoWidth, WIDTH);
  figure("standalone.first_frame_ms", firstFrameMs);
  figure("standalone.fps", state.fps);
  await waitFor("the tile's stats line", () =>
    page.locator(`.tile[data-peer="${camera.id}"] .stats`).textContent().then((t) => t.includes("fps")));
  console.log(`screenshot ${await screenshot(page, "standalone")}`);
});

test("c: two tabs play; closing one frees its connection, the other plays on", async () => {
  const { camera, url, status } = await cameraOnMosquitto("den");
  const browser = await launchBrowser();
  const first = await watch(browser, url, camera.id);
  const second = await watch(browser, url, camera.id);
  await waitFor("two viewers in status", () => viewersOf(status, camera) === 2);
  await first.page.close();
  await waitFor("one viewer in status", () => viewersOf(status, camera) === 1);
  await camera.waitLog(/closing connection/);
  const before = (await peerState(second.page, camera.id)).framesDecoded;
  await waitDecoded(second.page, camera.id, before + 30);
});

test("d: two participants with webcams and the camera: a full mesh of three", async () => {
  const { camera, url, status } = await cameraOnMosquitto("call");
  const browser = await launchBrowser({ fakeMedia: true });
  const alice = await browser.newPage();
  const bob = await browser.newPage();
  await alice.goto(`${url}&id=alice&media=1`);
  await bob.goto(`${url}&id=bob&media=1`);
  for (const [page, other] of [[alice, "bob"], [bob, "alice"]]) {
    await waitDecoded(page, camera.id, 30);
    await waitDecoded(page, other, 30);
  }
  await waitFor("two viewers in status", () => viewersOf(status, camera) === 2);
});

test("e: a stopped camera shows offline within 5 s", async () => {
  const { camera, url } = await cameraOnMosquitto("porch");
  const browser = await launchBrowser();
  const { page } = await watch(browser, url, camera.id);
  const badge = page.locator(`.tile[data-peer="${camera.id}"] .badge`);
  assert.equal(await badge.textContent(), "live");
  assert.equal(await camera.stop(), 0);
  await waitFor("the offline badge", async () => (await badge.textContent()) === "offline", 5_000);
});

test("f: pinned to the low layer, Chromium decodes its size on the same stream, and the tile says so; let go, the top layer again", async () => {
  const { broker, camera, url } = await cameraOnMosquitto("attic");
  const browser = await launchBrowser();
  const page = await browser.newPage();
  await page.goto(`${url}&id=web-pin`);
  await waitDecoded(page, camera.id, 30);
  const tile = page.locator(`.tile[data-peer="${camera.id}"] .stats`);
  await waitFor("the tile showing layer 0", async () => (await tile.textContent()).includes(`layer 0 ${WIDTH}×${HEIGHT}`));

  const pinned = await command(broker.url, camera.id, { cmd: "pin", peer: "web-pin", layer: 1 });
  assert.equal(pinned.ok, true, JSON.stringify(pinned));
  // The default low layer: half the width and height.
  const low = await waitFor("Chromium decoding the low layer", async () => {
    const s = await peerState(page, camera.id);
    return s?.videoWidth === WIDTH / 2 && s.link?.layer === 1 ? s : null;
  });
  assert.equal(low.link.pinned, 1);
  assert.equal(low.link.width, WIDTH / 2);
  await waitFor("the tile showing the pinned layer", async () =>
    (await tile.textContent()).includes(`layer 1 ${WIDTH / 2}×${HEIGHT / 2} pinned`));
  await waitDecoded(page, camera.id, low.framesDecoded + 30);
  console.log(`screenshot ${await screenshot(page, "pinned-low-layer")}`);

  const free = await command(broker.url, camera.id, { cmd: "pin", peer: "web-pin", layer: null });
  assert.equal(free.ok, true, JSON.stringify(free));
  const top = await waitFor("Chromium decoding the top layer again", async () => {
    const s = await peerState(page, camera.id);
    return s?.videoWidth === WIDTH && s.link?.layer === 0 ? s : null;
  });
  assert.equal(top.link.pinned, null);
  await waitDecoded(page, camera.id, top.framesDecoded + 30);
  const unknown = await command(broker.url, camera.id, { cmd: "pin", peer: "nobody", layer: 1 });
  assert.equal(unknown.error?.code, "not_found", JSON.stringify(unknown));
});
