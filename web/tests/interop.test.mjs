// Interoperability: the camera daemon against a viewer page written from
// PROTOCOL.md alone (web/tests/independent), in Debian's headless Chromium
// with its default WebRTC settings, through Mosquitto's WebSockets listener.
// Deadlines only turn hangs into failures; nothing here is a timing target.
import { after, afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { HEIGHT, WIDTH, cleanup, launchChromium, waitFor } from "./harness.mjs";
import { cameraInRoom, cameraOf, openViewer, serveIndependent, videoDirection } from "./independent/driver.mjs";

afterEach(cleanup);
after(cleanup);

/** After a replace, the camera has to notice on its own and offer again. */
const REPLACE_DEADLINE_MS = 45_000;

async function setup(room) {
  const cam = await cameraInRoom(room);
  const pageUrl = await serveIndependent();
  const browser = await launchChromium();
  const viewer = await openViewer(browser, pageUrl, { broker: cam.broker.wsUrl, room });
  return { ...cam, browser, pageUrl, viewer };
}

/** What the page knows of `camera`, short enough for a failure message. */
function summary(state, camera) {
  const { cam } = cameraOf(state, camera);
  if (!cam) return JSON.stringify({ joined: state?.joined, events: state?.events?.slice(-15) });
  return JSON.stringify({
    generation: cam.generation, byes: cam.byes,
    conns: cam.conns.map((c) => ({
      generation: c.generation, offers: c.offers.length, answers: c.answers.length,
      framesDecoded: c.framesDecoded, connectionState: c.connectionState, closeReason: c.closeReason,
      states: c.states.slice(-6),
    })),
    events: state.events.slice(-15),
  }, null, 1);
}

/**
 * Waits until the page's current connection to `camera` is of generation
 * `minGeneration` or later and has decoded more than `frames` frames.
 */
async function waitDecoding(viewer, camera, { frames = 0, minGeneration = 1, deadlineMs } = {}) {
  let last = null;
  try {
    return await waitFor(`generation ≥ ${minGeneration} decoding more than ${frames} frames`, async () => {
      last = await viewer.state();
      const { conn } = cameraOf(last, camera);
      return conn && conn.generation >= minGeneration && conn.framesDecoded > frames ? last : null;
    }, deadlineMs);
  } catch (e) {
    e.message += `\npage state: ${summary(last, camera)}`;
    throw e;
  }
}

function fingerprint(sdp) {
  return sdp.match(/^a=fingerprint:(.+)$/m)?.[1].trim();
}

test("a: the independent page joins and decodes the camera's video", async () => {
  const { camera, presence, viewers, viewer } = await setup("interop-a");
  const state = await waitDecoding(viewer, camera.id, { frames: 30 });
  const { cam, conn } = cameraOf(state, camera.id);
  assert.equal(conn.generation, 1, "one connection, no rebuild");
  assert.equal(conn.frameWidth, WIDTH);
  assert.equal(conn.frameHeight, HEIGHT);
  assert.ok(state.joinAt !== null && conn.firstFrameAt > state.joinAt, "first frame after the join");
  assert.ok(cam.status?.state === "online", "the page follows the camera's status");
  // The page's presence as the camera and everyone else see it.
  assert.deepEqual(
    presence.json(`meshcam/rooms/interop-a/peers/${viewer.id}`),
    { v: 1, id: viewer.id, session: state.session, role: "viewer", name: "independent viewer" },
  );
  await waitFor("one viewer in the camera's status", () => viewers() === 1);
});

test("b: after the page replaces its connection (new DTLS fingerprint, no bye), frames decode again", async () => {
  const { camera, viewer } = await setup("interop-b");
  const before = await waitDecoding(viewer, camera.id, { frames: 10 });
  const old = cameraOf(before, camera.id).conn.generation;
  const fresh = await viewer.replace(camera.id);
  assert.ok(fresh > old);
  const state = await waitDecoding(viewer, camera.id, { minGeneration: fresh, deadlineMs: REPLACE_DEADLINE_MS });
  const { cam, conn } = cameraOf(state, camera.id);
  assert.ok(conn.framesDecoded > 0);
  // The scenario is the intended one: the camera saw another DTLS endpoint.
  const sdps = (await viewer.state({ sdp: true })).cameras[camera.id].conns;
  const answered = (g) => sdps.find((c) => c.generation === g).answers[0].sdp;
  assert.notEqual(fingerprint(answered(conn.generation)), fingerprint(answered(old)));
  assert.deepEqual(cam.byes, [], "no bye either way");
});

test("c: leaving (bye, presence cleared) brings the camera's viewers to 0", async () => {
  const { camera, presence, viewers, viewer } = await setup("interop-c");
  await waitDecoding(viewer, camera.id, { frames: 10 });
  await waitFor("one viewer in the camera's status", () => viewers() === 1);
  await viewer.leave();
  await waitFor("the page's presence cleared", () =>
    presence.json(`meshcam/rooms/interop-c/peers/${viewer.id}`) === null);
  await waitFor("no viewer in the camera's status", () => viewers() === 0);
});

test("d: the camera offers send-only video and Chromium answers receive-only", async () => {
  const { camera, viewer } = await setup("interop-d");
  const state = await waitFor("the page's first answer", async () => {
    const s = await viewer.state({ sdp: true });
    return cameraOf(s, camera.id).cam?.conns[0]?.answers.length ? s : null;
  });
  const first = cameraOf(state, camera.id).cam.conns[0];
  assert.deepEqual(
    { offer: videoDirection(first.offers[0].sdp), answer: videoDirection(first.answers[0].sdp) },
    { offer: "sendonly", answer: "recvonly" },
    `the camera's offer:\n${first.offers[0].sdp}`,
  );
});

test("e: a vanished tab leaves by its MQTT will; the camera frees the connection", async () => {
  const { camera, presence, viewers, viewer } = await setup("interop-e");
  await waitDecoding(viewer, camera.id, { frames: 10 });
  await waitFor("one viewer in the camera's status", () => viewers() === 1);
  await viewer.close(); // no bye, no presence clear: the broker publishes the will
  await waitFor("presence cleared by the will", () =>
    presence.json(`meshcam/rooms/interop-e/peers/${viewer.id}`) === null);
  await waitFor("no viewer in the camera's status", () => viewers() === 0);
});

test("f: the camera sends its candidates only once it has the page's answer", async () => {
  const { camera, viewer } = await setup("interop-f");
  await waitDecoding(viewer, camera.id, { frames: 1 });
  const { cam } = cameraOf(await viewer.state(), camera.id);
  const answeredAt = cam.conns[0].answers[0].at;
  assert.ok(cam.candidatesAt.length > 0, "no candidate from the camera");
  assert.ok(
    cam.candidatesAt.every((at) => at > answeredAt),
    `candidates at ${cam.candidatesAt.map((t) => (t - answeredAt).toFixed(1))} ms from the answer`,
  );
});
