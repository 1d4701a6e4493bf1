// Talking back from the page, in headless Chromium: its fake microphone
// plays a 660 Hz tone; the camera's speaker is a pipeline sink writing
// what it plays to a file this test reads. Holding the talk button asks
// for the microphone and the floor; the camera plays the tone at its pitch
// and level; letting go gives the floor back and the speaker falls silent.
// A second tab sees who talks on its tile and is refused with that name.
import { after, afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  cleanup, figure, launchBrowser, observe, peerState, startCameraWithPage, tempDir, waitDecoded, waitFor,
} from "./harness.mjs";

afterEach(cleanup);
after(cleanup);

const RATE = 48_000;
const TONE_HZ = 660;
/** The tone's amplitude: 0.5 of full scale, -9 dBFS RMS. */
const AMPLITUDE = 0.5;

/** A mono 16-bit WAV of `seconds` of a sine, then `silent` seconds of silence. */
function toneWav(path, hz, seconds, silent = 0) {
  const samples = RATE * seconds;
  const data = Buffer.alloc((samples + RATE * silent) * 2);
  for (let i = 0; i < samples; i++) {
    data.writeInt16LE(Math.round(AMPLITUDE * 32767 * Math.sin((2 * Math.PI * hz * i) / RATE)), i * 2);
  }
  const header = Buffer.alloc(44);
  header.write("RIFF", 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write("WAVEfmt ", 8);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(RATE, 24);
  header.writeUInt32LE(RATE * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write("data", 36);
  header.writeUInt32LE(data.length, 40);
  writeFileSync(path, Buffer.concat([header, data]));
}

/** The samples the speaker has played, from sample `from` on. */
function played(path, from = 0) {
  let bytes;
  try {
    bytes = readFileSync(path);
  } catch {
    return new Int16Array(0);
  }
  const all = new Int16Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.length / 2));
  return all.slice(from);
}

function playedCount(path) {
  try {
    return Math.floor(statSync(path).size / 2);
  } catch {
    return 0;
  }
}

/** Level (dBFS, RMS) and pitch (Hz, upward zero crossings). */
function measure(samples) {
  let sum = 0;
  let crossings = 0;
  for (let i = 0; i < samples.length; i++) {
    const x = samples[i] / 32768;
    sum += x * x;
    if (i > 0 && samples[i - 1] < 0 && samples[i] >= 0) crossings++;
  }
  const rms = Math.sqrt(sum / Math.max(1, samples.length));
  return { db: rms > 1e-6 ? 20 * Math.log10(rms) : -120, hz: (crossings * RATE) / Math.max(1, samples.length) };
}

/** A camera on a fresh Mosquitto whose speaker writes to `speakerFile`; `talk` is its `[talk]` section. */
async function talkingCamera(id, speakerFile, talk = "") {
  const { broker, camera, url } = await startCameraWithPage({
    id,
    room: "porch",
    toml: [
      "[speaker]", 'sink = "pipeline"',
      `pipeline = "audioconvert ! audio/x-raw,format=S16LE,channels=1,rate=${RATE} ! filesink buffer-mode=unbuffered location=${speakerFile}"`,
      `[talk]\n${talk}`,
    ].join("\n"),
  });
  const stats = await observe(broker.url, `meshcam/devices/${camera.id}/stats`);
  return { camera, url, telemetry: () => stats.json(`meshcam/devices/${camera.id}/stats`) };
}

test("talk: holding the button, Chromium's microphone is heard at its pitch; let go, silence; a second tab is told who talks", async () => {
  const dir = tempDir("talk");
  const wav = join(dir, "tone.wav");
  toneWav(wav, TONE_HZ, 10);
  const speakerFile = join(dir, "played.raw");
  const { camera, url, telemetry } = await talkingCamera("cam-talk", speakerFile);

  const browser = await launchBrowser({ fakeMedia: true, fakeSound: wav });
  const alice = await browser.newPage();
  await alice.goto(`${url}&id=web-alice&name=Alice`);
  await waitDecoded(alice, camera.id, 30);
  const bob = await browser.newPage();
  await bob.goto(`${url}&id=web-bob&name=Bob`);
  await waitDecoded(bob, camera.id, 30);

  const button = alice.locator(`.tile[data-peer="${camera.id}"] .talk`);
  assert.equal(await button.isVisible(), true, "a camera with a speaker has a talk button");
  assert.equal(await button.textContent(), "hold to talk");
  const box = await button.boundingBox();
  await alice.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await alice.mouse.down();
  await waitFor("Alice talking", async () => (await peerState(alice, camera.id))?.talk?.state === "talking");
  await waitFor("the camera naming Alice as the talker", () => telemetry()?.talk?.holder?.name === "Alice");

  // Skip what the jitter buffer and the decoder start with; then a second.
  const start = playedCount(speakerFile) + RATE / 2;
  const heard = await waitFor("a second of Alice's tone at the speaker", () => {
    const samples = played(speakerFile, start);
    return samples.length >= RATE ? measure(samples.slice(0, RATE)) : null;
  });
  assert.ok(Math.abs(heard.hz - TONE_HZ) <= 15, `heard ${heard.hz.toFixed(0)} Hz, sent ${TONE_HZ} Hz`);
  // Chromium's own processing of a microphone (gain control, noise
  // suppression, on by default and left on) brings the -9 dBFS tone to
  // about -23 dBFS.
  assert.ok(heard.db > -30 && heard.db < -3, `heard at ${heard.db.toFixed(1)} dBFS`);
  figure("talk.heard_dbfs", heard.db.toFixed(1));

  // Bob's tile says who talks; asking, Bob is refused with that name.
  const bobTile = bob.locator(`.tile[data-peer="${camera.id}"]`);
  await waitFor("Bob's tile naming Alice", async () => (await bobTile.locator(".talker").textContent()) === "Alice is talking");
  await bobTile.locator(".talk").click();
  const refused = await waitFor("Bob refused", async () => {
    const talk = (await peerState(bob, camera.id))?.talk;
    return talk?.reason === "taken" && talk.state === "idle" ? talk : null;
  });
  assert.equal(refused.holder?.name, "Alice");
  assert.match(await bob.locator("#status").textContent(), /Alice is talking/);

  await alice.mouse.up();
  await waitFor("the floor free", () => telemetry()?.talk && telemetry().talk.holder === null);
  assert.equal((await peerState(alice, camera.id)).talk.state, "idle");
  // What the jitter buffer held plays out; then nothing more.
  const settled = await waitFor("the speaker to stop", async () => {
    const before = playedCount(speakerFile);
    await new Promise((r) => setTimeout(r, 300));
    return playedCount(speakerFile) === before ? before : null;
  });
  await new Promise((r) => setTimeout(r, 2000));
  const after = measure(played(speakerFile, settled));
  assert.ok(after.db < -40, `after the release: ${after.db.toFixed(1)} dBFS`);
});

// The silence rule, against Chromium at its defaults (its microphone
// processing on, no DTX) and the camera's (silence_s 15, max_s 120), for
// minutes: a talker whose microphone sounds keeps the floor; once it falls
// silent, packets of silence keep coming, and the turn ends `silent` after
// 15 s. The fake microphone plays 100 s of tone, then silence.
test("talk: Chromium keeps the floor for 100 s while its microphone sounds and loses it 15 s after it falls silent", async () => {
  const TALK_S = 100;
  const SILENCE_S = 15;
  const dir = tempDir("talk-long");
  const wav = join(dir, "tone.wav");
  toneWav(wav, TONE_HZ, TALK_S, 60);
  const { camera, url, telemetry } = await talkingCamera("cam-talk-long", join(dir, "played.raw"));
  const browser = await launchBrowser({ fakeMedia: true, fakeSound: wav });
  const page = await browser.newPage();
  await page.goto(`${url}&id=web-long&name=Long`);
  await waitDecoded(page, camera.id, 30);
  // A tap: the floor is kept until the next tap (or the camera ends it).
  await page.locator(`.tile[data-peer="${camera.id}"] .talk`).click();
  await waitFor("talking", async () => (await peerState(page, camera.id))?.talk?.state === "talking");
  const granted = Date.now();
  await waitFor("the camera naming the talker", () => telemetry()?.talk?.holder?.peer === "web-long");
  const ended = await waitFor("the turn to end", async () => {
    const talk = (await peerState(page, camera.id))?.talk;
    return talk?.state === "idle" ? talk : null;
  }, (TALK_S + SILENCE_S + 20) * 1000);
  const heldS = (Date.now() - granted) / 1000;
  figure("talk.chromium_turn_s", heldS.toFixed(1));
  assert.equal(ended.reason, "silent", JSON.stringify(ended));
  // The microphone opened a moment before the grant: the tone ends a
  // little under TALK_S after it.
  assert.ok(heldS >= TALK_S - 5 + SILENCE_S - 1, `the turn ended after ${heldS.toFixed(1)} s`);
  assert.ok(heldS <= TALK_S + SILENCE_S + 5, `the turn ended after ${heldS.toFixed(1)} s`);
  assert.match(await page.locator("#status").textContent(), /silent/);
});
