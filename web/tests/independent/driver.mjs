// Node-side driver of the independent viewer page (index.html + viewer.js):
// serves it, opens it in a fresh browser context, reads its window.independent.
import { join } from "node:path";
import { ROOT, observe, serveFiles, startCamera, startMosquitto } from "../harness.mjs";

const HERE = join(ROOT, "web/tests/independent");

/** Serves the page and mqtt.js (the browser build from node_modules); returns the page URL. */
export async function serveIndependent() {
  const base = await serveFiles({
    "/": join(HERE, "index.html"),
    "/index.html": join(HERE, "index.html"),
    "/viewer.js": join(HERE, "viewer.js"),
    "/mqtt.min.js": join(ROOT, "web/node_modules/mqtt/dist/mqtt.min.js"),
  });
  return `${base}/index.html`;
}

/** The status of camera `id` and the presences of `room`, observed on `broker`. */
export async function watchRoom(broker, room, id) {
  const status = await observe(broker.url, `meshcam/devices/${id}/status`);
  const presence = await observe(broker.url, `meshcam/rooms/${room}/peers/+`);
  return { status, presence, viewers: () => status.json(`meshcam/devices/${id}/status`)?.viewers };
}

/** Mosquitto (TCP + WebSockets) and a camera told to be in `room`; its status observed. */
export async function cameraInRoom(room, { id = "cam1" } = {}) {
  const broker = await startMosquitto();
  const camera = await startCamera({ id, toml: `rooms = ["${room}"]\n[mqtt]\nurl = "${broker.url}"` });
  return { broker, camera, ...(await watchRoom(broker, room, camera.id)) };
}

/** Opens the page in its own browser context. `manual`: joins only on `viewer.join()`. */
export async function openViewer(browser, pageUrl, { broker, room, id, manual = false }) {
  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  const page = await context.newPage();
  const q = new URLSearchParams({ broker, room });
  if (id) q.set("id", id);
  if (manual) q.set("manual", "1");
  await page.goto(`${pageUrl}?${q}`);
  await page.waitForFunction(() => window.independent !== undefined);
  return {
    page,
    context,
    id: await page.evaluate(() => window.independent.id),
    join: () => page.evaluate(() => window.independent.join()),
    state: (opts = {}) => page.evaluate((o) => window.independent.state(o), opts),
    replace: (camera) => page.evaluate((c) => window.independent.replace(c), camera),
    leave: () => page.evaluate(() => window.independent.leave()),
    /** Resolves on the first decoded frame of `camera`'s current connection. */
    firstFrame: (camera) => page.evaluate((c) => window.independent.firstFrame(c), camera),
    /** Frames decoded and presented, offers, and the longest gap since the last call. */
    frames: (camera) => page.evaluate((c) => window.independent.frames(c), camera),
    close: () => context.close(),
  };
}

/** The camera's record in a page state, and its current connection (or null). */
export function cameraOf(state, camera) {
  const cam = state?.cameras?.[camera] ?? null;
  const conn = cam && cam.generation !== null ? cam.conns.find((c) => c.generation === cam.generation) : null;
  return { cam, conn };
}

/**
 * The direction attribute of the first video m-section of `sdp`
 * (`sendrecv` when it names none, as RFC 8866 says), or null without video.
 */
export function videoDirection(sdp) {
  const sections = sdp.split(/\r?\n(?=m=)/);
  const video = sections.find((s) => s.startsWith("m=video"));
  if (!video) return null;
  const m = video.match(/^a=(sendonly|recvonly|sendrecv|inactive)\s*$/m);
  return m ? m[1] : "sendrecv";
}
