// Real parts for the browser tests: Mosquitto with a WebSockets listener,
// the meshcam daemon, headless Chromium (Debian's) driven by playwright-core,
// and an MQTT observer. Every wait has a deadline; nothing sleeps and hopes.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import mqtt from "mqtt";
import { chromium } from "playwright-core";

export const ROOT = resolve(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "../..");
export const BIN = process.env.MESHCAM_BIN || join(ROOT, "target/debug/meshcam");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** Where screenshots go. */
export const OUT = join(ROOT, "target/browser-tests");
export const DEADLINE_MS = 30_000;
/** Small video keeps two cores free for Chromium's decoders. */
export const WIDTH = 640;
export const HEIGHT = 360;

const cleanups = [];

/** Runs `fn` at cleanup(), after what was started later. */
export function onCleanup(fn) {
  cleanups.push(fn);
}

/** Runs every cleanup registered by the harness, newest first. */
export async function cleanup() {
  while (cleanups.length) {
    try {
      await cleanups.pop()();
    } catch {
      // Already gone.
    }
  }
}

/**
 * Runs a script's `main`, then every cleanup, also when the script is
 * interrupted (SIGINT, SIGTERM); exits non-zero if `main` threw.
 */
export async function runScript(name, main) {
  process.on("SIGINT", () => { cleanup().finally(() => process.exit(130)); });
  process.on("SIGTERM", () => { cleanup().finally(() => process.exit(143)); });
  let failed = false;
  try {
    await main();
  } catch (e) {
    failed = true;
    console.error(`${name}: ${e.stack ?? e}`);
  } finally {
    await cleanup();
  }
  process.exit(failed ? 1 : 0);
}

/** A directory of its own, removed with the rest at cleanup. */
export function tempDir(name) {
  const dir = mkdtempSync(join(tmpdir(), `meshcam-${name}-`));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
    server.on("error", reject);
  });
}

/** Polls `probe` until it returns a truthy value, or fails naming `what`. */
export async function waitFor(what, probe, deadlineMs = DEADLINE_MS) {
  const end = Date.now() + deadlineMs;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `promise`, or a failure naming `what` if it has not settled within `deadlineMs`. */
export function withDeadline(what, promise, deadlineMs) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${deadlineMs} ms waiting for ${what}`)), deadlineMs);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

async function waitForPort(port, child, what) {
  await waitFor(what, () => {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    return new Promise((ok) => {
      const socket = connect(port, "127.0.0.1");
      socket.on("connect", () => { socket.destroy(); ok(true); });
      socket.on("error", () => ok(false));
    });
  });
}

/** Mosquitto on free ports: MQTT for the camera, WebSockets for pages. */
export async function startMosquitto() {
  const dir = tempDir("mosquitto");
  const port = await freePort();
  const wsPort = await freePort();
  const conf = join(dir, "mosquitto.conf");
  writeFileSync(conf, [
    "persistence false", "allow_anonymous true", "per_listener_settings false",
    `listener ${port} 127.0.0.1`, `listener ${wsPort} 127.0.0.1`, "protocol websockets", "",
  ].join("\n"));
  const child = spawn("mosquitto", ["-c", conf], { stdio: "ignore" });
  cleanups.push(() => child.kill("SIGKILL"));
  await waitForPort(port, child, "mosquitto");
  await waitForPort(wsPort, child, "mosquitto websockets");
  return { url: `mqtt://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${wsPort}` };
}

/**
 * The camera daemon with `toml` added to a test configuration; `video` is
 * its `[video]` section (the test picture by default).
 */
export async function startCamera({
  id = "cam1", toml = "",
  video = `source = "test"\nwidth = ${WIDTH}\nheight = ${HEIGHT}\nfps = 30\nbitrate_kbps = 800`,
} = {}) {
  const dir = tempDir(`camera-${id}`);
  const config = join(dir, "meshcam.toml");
  writeFileSync(config, [
    `state_dir = "${dir}"`,
    "stats_interval_s = 1",
    toml,
    "[device]", `id = "${id}"`, `name = "Camera ${id}"`,
    "[video]", video, "",
  ].join("\n"));
  const child = spawn(BIN, ["--config", config], {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info,webrtc=warn,rtc=warn,rumqttd=off" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr.on("data", (chunk) => {
    log += chunk.toString();
    if (process.env.MESHCAM_TEST_LOG) process.stderr.write(chunk);
  });
  const exited = new Promise((r) => child.on("exit", (code) => r(code)));
  cleanups.push(() => child.kill("SIGKILL"));
  const camera = {
    id,
    child,
    exited,
    log: () => log,
    /** Waits for a log line matching `pattern` and returns its match. */
    waitLog: (pattern, deadlineMs) => waitFor(`camera log ${pattern}`, () => {
      if (child.exitCode !== null) throw new Error(`camera exited with ${child.exitCode}:\n${log}`);
      return log.match(pattern);
    }, deadlineMs),
    stop: async () => {
      child.kill("SIGTERM");
      return exited;
    },
  };
  await camera.waitLog(/INFO meshcam::daemon: ready/);
  return camera;
}

/** The camera's log line that gives the page's address. */
export const PAGE_URL = /watch in a browser: (http:\/\/\S+)/;

/**
 * Mosquitto, and a camera in `room` that serves the page, which reaches
 * the broker on Mosquitto's WebSockets listener; `id`, `video` and `toml`
 * (added after the camera's own sections) as for startCamera. Returns the
 * broker, the camera and the page's address.
 */
export async function startCameraWithPage({ id, room, toml = "", video } = {}) {
  const broker = await startMosquitto();
  const camera = await startCamera({
    id,
    video,
    toml: [
      `rooms = ["${room}"]`, `[mqtt]\nurl = "${broker.url}"`,
      `[web]\nlisten = "127.0.0.1:0"\nbroker_url = "${broker.wsUrl}"`, toml,
    ].join("\n"),
  });
  const [, url] = await camera.waitLog(PAGE_URL);
  return { broker, camera, url };
}

/**
 * Headless Chromium; `fakeMedia` gives it a fake webcam and microphone,
 * whose sound is `fakeSound` (a WAV file, played in a loop) when given.
 */
export async function launchBrowser({ fakeMedia = false, fakeSound = null } = {}) {
  const args = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // Host candidates as addresses: loopback has no mDNS responder.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    // Hidden tabs keep decoding.
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
  ];
  if (fakeMedia) args.push("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream");
  if (fakeSound) args.push(`--use-file-for-fake-audio-capture=${fakeSound}`);
  const userDataDir = tempDir("chromium");
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args, viewport: { width: 1024, height: 640 },
  });
  cleanups.push(() => context.close());
  return context;
}

/** The page's own state (`window.meshcam`) for peer `id`. */
export function peerState(page, id) {
  return page.evaluate((peer) => window.meshcam?.peers?.[peer] ?? null, id);
}

/**
 * Waits until `page` has decoded more than `frames` frames of `id`, and
 * returns the page's state of it.
 */
export function waitDecoded(page, id, frames, deadlineMs) {
  return waitFor(`${id} decoding more than ${frames} frames`, async () => {
    const s = await peerState(page, id);
    return s && s.framesDecoded > frames ? s : null;
  }, deadlineMs);
}

/** Subscribes to `filter` and keeps the latest payload of every topic. */
export async function observe(url, filter) {
  const client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 500 });
  cleanups.push(() => client.end(true));
  const latest = new Map();
  client.on("message", (topic, payload) => latest.set(topic, payload.toString()));
  await new Promise((ok, fail) => {
    client.once("connect", () => client.subscribe(filter, { qos: 1 }, (e) => (e ? fail(e) : ok())));
    client.once("error", fail);
  });
  return {
    json: (topic) => {
      const text = latest.get(topic);
      return text ? JSON.parse(text) : null;
    },
  };
}

/**
 * Sends `command` (without `v`, `id`, `reply_to`) to camera `device` on the
 * broker at `url`; returns its reply.
 */
export async function command(url, device, body) {
  const client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 500 });
  cleanups.push(() => client.end(true));
  const id = `c-${Math.random().toString(36).slice(2, 10)}`;
  const replyTo = `meshcam/clients/test-ctl/${id}`;
  const reply = new Promise((ok) => client.on("message", (topic, payload) => {
    const msg = JSON.parse(payload.toString());
    if (topic === replyTo && msg.id === id) ok(msg);
  }));
  await new Promise((ok, fail) => {
    client.once("connect", () => client.subscribe(replyTo, { qos: 1 }, (e) => (e ? fail(e) : ok())));
    client.once("error", fail);
  });
  client.publish(`meshcam/devices/${device}/cmd`, JSON.stringify({ v: 1, id, reply_to: replyTo, ...body }), { qos: 1 });
  let answered = null;
  reply.then((msg) => { answered = msg; });
  await waitFor(`the reply to ${body.cmd}`, () => answered);
  client.end(true);
  return answered;
}

export async function screenshot(page, name) {
  mkdirSync(OUT, { recursive: true });
  const path = join(OUT, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

/** Prints a figure for the issue notes: `figure browser.ttff_ms 412`. */
export function figure(name, value) {
  console.log(`figure ${name} ${value}`);
}

/** Serves `files` (URL path → file on disk) over HTTP on loopback; returns its base URL. */
export async function serveFiles(files) {
  const { createServer: createHttpServer } = await import("node:http");
  const { readFile } = await import("node:fs/promises");
  const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css" };
  const server = createHttpServer(async (req, res) => {
    const path = files[new URL(req.url, "http://x").pathname];
    if (!path) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(path);
      const type = types[path.slice(path.lastIndexOf("."))] ?? "application/octet-stream";
      res.writeHead(200, { "content-type": `${type}; charset=utf-8`, "cache-control": "no-store" }).end(body);
    } catch {
      res.writeHead(500).end();
    }
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  cleanups.push(() => new Promise((ok) => { server.closeAllConnections(); server.close(ok); }));
  return `http://127.0.0.1:${server.address().port}`;
}

/**
 * Headless Chromium as an outside viewer runs it: a fresh profile, a fake
 * camera and microphone, and nothing else changed (local addresses stay
 * hidden behind mDNS names). Returns a playwright Browser: one context per
 * independent viewer.
 */
export async function launchChromium() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
      "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    ],
  });
  cleanups.push(() => browser.close());
  return browser;
}
