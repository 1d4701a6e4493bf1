// The meshcam browser viewer: joins a room over MQTT (WebSockets), keeps one
// RTCPeerConnection per participant (cameras offer to us; between browsers
// the smaller id offers), and shows a tile per participant with live stats:
// the browser's own (size, frame rate, bitrate, RTT) and, for a camera, what
// its telemetry says of our link (the layer it sends us, its estimate).
import mqtt from "mqtt";
import { JanusSubscription } from "./janus.js";
import { TalkButton } from "./talk.js";
import { Topics, decode, iOffer, isSession, linkTo, offeredIceServers, randomToken, VERSION } from "./protocol.js";

const params = new URLSearchParams(location.search);
const $ = (selector) => document.querySelector(selector);

/** Everything about the current join; null when not joined. */
let room = null;

/** Page state for humans and for tests. */
window.meshcam = { connected: false, peers: {} };

function setStatus(text) {
  $("#status").textContent = text;
}

// ── Tiles ────────────────────────────────────────────────────────────────

function tileFor(id, name) {
  let tile = document.querySelector(`.tile[data-peer="${id}"]`);
  if (!tile) {
    tile = document.createElement("section");
    tile.className = "tile";
    tile.dataset.peer = id;
    tile.innerHTML = `<video autoplay playsinline muted></video>
      <div class="bar"><span class="name"></span>
        <span class="talker" hidden></span>
        <button class="talk" type="button" hidden aria-pressed="false">hold to talk</button>
        <button class="speaker" type="button" hidden aria-pressed="false" title="Sound">sound off</button>
        <span class="badge connecting">connecting</span></div>
      <div class="stats"></div>`;
    $("#tiles").append(tile);
  }
  tile.querySelector(".name").textContent = name || id;
  return tile;
}

/** The tile's badge; a tile watched through an SFU says so. */
function setBadge(id, state) {
  const tile = document.querySelector(`.tile[data-peer="${id}"]`);
  if (!tile) return;
  const badge = tile.querySelector(".badge");
  badge.className = `badge ${state}`;
  badge.textContent = tile.dataset.via === "sfu" && state !== "offline" ? `${state} via SFU` : state;
  tile.dataset.state = state;
  window.meshcam.peers[id] = { ...(window.meshcam.peers[id] || {}), state };
}

/** Plays a remote track in the participant's tile. */
function showTrack(id, name, event, muted) {
  const tile = tileFor(id, name);
  const video = tile.querySelector("video");
  video.srcObject = event.streams[0] || new MediaStream([event.track]);
  video.muted = muted;
  video.play().catch(() => {});
  if (event.track.kind === "audio" && muted) offerSound(tile, video);
  const joinedAt = room.joinedAt;
  video.requestVideoFrameCallback?.(() => {
    const ms = Math.round(performance.now() - joinedAt);
    window.meshcam.peers[id] = { ...(window.meshcam.peers[id] || {}), firstFrameMs: ms };
  });
}

function removeTile(id) {
  document.querySelector(`.tile[data-peer="${id}"]`)?.remove();
  delete window.meshcam.peers[id];
}

// ── Sound ────────────────────────────────────────────────────────────────

/**
 * A camera's tile starts muted (browsers play sound only after a user
 * gesture); its speaker button turns the sound on and off, and starts the
 * tile's meter of what arrives: level and pitch, in the stats line.
 */
function offerSound(tile, video) {
  const button = tile.querySelector(".speaker");
  button.hidden = false;
  button.onclick = () => {
    video.muted = !video.muted;
    button.textContent = video.muted ? "sound off" : "sound on";
    button.setAttribute("aria-pressed", String(!video.muted));
    if (!video.muted) meterFor(tile, video.srcObject);
  };
}

/** An analyser of the tile's sound, made once per stream. */
function meterFor(tile, stream) {
  if (tile.meter?.stream === stream) return;
  room.audio ??= new AudioContext();
  room.audio.resume().catch(() => {});
  const analyser = room.audio.createAnalyser();
  analyser.fftSize = 32768;
  room.audio.createMediaStreamSource(stream).connect(analyser);
  tile.meter = { stream, analyser, samples: new Float32Array(analyser.fftSize) };
}

/** Level (dBFS) and pitch (Hz, from zero crossings) of the last ~0.7 s. */
function measureSound(meter) {
  const { analyser, samples } = meter;
  analyser.getFloatTimeDomainData(samples);
  let sum = 0;
  let crossings = 0;
  for (let i = 0; i < samples.length; i++) {
    sum += samples[i] * samples[i];
    if (i > 0 && samples[i - 1] <= 0 && samples[i] > 0) crossings++;
  }
  const rms = Math.sqrt(sum / samples.length);
  return {
    db: rms > 1e-5 ? Math.round(20 * Math.log10(rms) * 10) / 10 : -100,
    hz: Math.round((crossings * analyser.context.sampleRate) / samples.length),
  };
}

// ── Peer connections ─────────────────────────────────────────────────────

class Peer {
  constructor(presence) {
    this.presence = presence;
    this.pc = null;
    this.queued = [];
    this.remoteSet = false;
    this.lastBytes = 0;
    this.lastAt = 0;
    const tile = tileFor(presence.id, presence.name);
    setBadge(presence.id, room.offline.has(presence.id) ? "offline" : "connecting");
    if (presence.role === "camera") {
      const id = presence.id;
      this.talk = new TalkButton(tile, this, {
        say: setStatus,
        changed: (talk) => { window.meshcam.peers[id] = { ...(window.meshcam.peers[id] || {}), talk }; },
      });
      this.talk.show(presence.talk, room.me);
    }
  }

  get id() { return this.presence.id; }

  send(body) {
    const msg = { v: VERSION, session: room.session, to_session: this.presence.session, ...body };
    room.client.publish(room.topics.signal(this.id, room.me), JSON.stringify(msg), { qos: 1 });
  }

  /** A new connection; `offered` are the ICE servers the camera gave us. */
  open(offered = []) {
    this.close();
    const pc = new RTCPeerConnection({ iceServers: [...room.iceServers, ...offered] });
    this.pc = pc;
    this.remoteSet = false;
    pc.onicecandidate = (e) => this.send({ type: "candidate", candidate: e.candidate ? e.candidate.toJSON() : null });
    pc.ontrack = (e) => showTrack(this.id, this.presence.name, e, this.presence.role === "camera");
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      const s = pc.connectionState;
      if (s === "connected") setBadge(this.id, "live");
      else if (s === "failed" || s === "closed") this.failed();
      else if (s !== "new") setBadge(this.id, room.offline.has(this.id) ? "offline" : "connecting");
    };
    if (room.localStream) {
      for (const track of room.localStream.getTracks()) pc.addTrack(track, room.localStream);
    }
    return pc;
  }

  async offer() {
    const pc = this.open();
    if (!room.localStream) {
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    await pc.setLocalDescription(await pc.createOffer());
    this.send({ type: "offer", sdp: pc.localDescription.sdp });
  }

  async answer(sdp, offered) {
    const fresh = !this.pc || this.pc.signalingState === "closed";
    const pc = fresh ? this.open(offered) : this.pc;
    // An ICE restart may bring fresh credentials.
    if (!fresh && offered.length) pc.setConfiguration({ ...pc.getConfiguration(), iceServers: [...room.iceServers, ...offered] });
    await pc.setRemoteDescription({ type: "offer", sdp });
    if (this.presence.role === "camera" && !canDecodeH264()) {
      setStatus(`This browser cannot decode H.264, which ${this.id} sends`);
    }
    this.remoteSet = true;
    await pc.setLocalDescription(await pc.createAnswer());
    this.send({ type: "answer", sdp: pc.localDescription.sdp });
    await this.flush();
  }

  async applyAnswer(sdp) {
    if (!this.pc) return;
    await this.pc.setRemoteDescription({ type: "answer", sdp });
    this.remoteSet = true;
    await this.flush();
  }

  async candidate(candidate) {
    if (!this.pc || !this.remoteSet) {
      if (this.queued.length < 64) this.queued.push(candidate);
      return;
    }
    await this.pc.addIceCandidate(candidate || undefined).catch(() => {});
  }

  async flush() {
    const queued = this.queued;
    this.queued = [];
    for (const c of queued) await this.candidate(c);
  }

  failed() {
    setBadge(this.id, room.offline.has(this.id) ? "offline" : "connecting");
    // The offerer offers again while both are present (PROTOCOL.md).
    if (iOffer(room.me, "viewer", this.presence) && room.peers.get(this.id) === this && !this.ended) {
      clearTimeout(this.retry);
      this.retry = setTimeout(() => room && room.peers.get(this.id) === this && this.offer(), 2000);
    }
  }

  close() {
    clearTimeout(this.retry);
    this.talk?.reset();
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.close();
    }
  }

  updateStats() {
    return showStats(this);
  }
}

/** The tile's stats line, from the browser's own statistics of `holder.pc`. */
async function showStats(holder) {
  if (!holder.pc) return;
  const report = await holder.pc.getStats();
  let inbound = null;
  let sound = null;
  let rtt = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
    if (s.type === "inbound-rtp" && s.kind === "audio") sound = s;
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
  });
  const tile = document.querySelector(`.tile[data-peer="${holder.id}"]`);
  if (!tile) return;
  const video = tile.querySelector("video");
  const parts = [];
  if (inbound) {
    const now = inbound.timestamp;
    const kbps = holder.lastAt ? ((inbound.bytesReceived - holder.lastBytes) * 8) / (now - holder.lastAt) : 0;
    holder.lastBytes = inbound.bytesReceived;
    holder.lastAt = now;
    parts.push(`${inbound.frameWidth || video.videoWidth}×${inbound.frameHeight || video.videoHeight}`);
    parts.push(`${Math.round(inbound.framesPerSecond || 0)} fps`);
    parts.push(`${Math.round(kbps)} kbps`);
    tile.dataset.frames = inbound.framesDecoded || 0;
    window.meshcam.peers[holder.id] = {
      ...(window.meshcam.peers[holder.id] || {}),
      framesDecoded: inbound.framesDecoded || 0,
      videoWidth: video.videoWidth,
      fps: inbound.framesPerSecond || 0,
    };
  }
  if (sound) {
    window.meshcam.peers[holder.id] = {
      ...(window.meshcam.peers[holder.id] || {}),
      audioPackets: sound.packetsReceived || 0,
    };
  }
  if (tile.meter) {
    const sound = measureSound(tile.meter);
    parts.push(`sound ${sound.db} dB`);
    window.meshcam.peers[holder.id] = { ...(window.meshcam.peers[holder.id] || {}), sound };
  }
  if (rtt !== null) parts.push(`RTT ${Math.round(rtt * 1000)} ms`);
  const link = holder.link;
  if (link) {
    const size = link.width && link.height ? ` ${link.width}×${link.height}` : "";
    parts.push(`layer ${link.layer}${size}${link.pinned !== null ? " pinned" : ""}`);
    if (typeof link.estimateKbps === "number") parts.push(`estimate ${link.estimateKbps} kbps (${link.estimator})`);
    parts.push(`loss ${(link.loss * 100).toFixed(1)} %`);
    parts.push(`${link.switches} switch${link.switches === 1 ? "" : "es"}`);
    window.meshcam.peers[holder.id] = { ...(window.meshcam.peers[holder.id] || {}), link };
  }
  tile.querySelector(".stats").textContent = parts.join(" · ");
}

function canDecodeH264() {
  const caps = RTCRtpReceiver.getCapabilities?.("video");
  return !caps || caps.codecs.some((c) => /h264/i.test(c.mimeType));
}

// ── Signaling ────────────────────────────────────────────────────────────

// ── Watching through an SFU ──────────────────────────────────────────────

/** How long before watching through the SFU again after it failed. */
const SFU_RETRY_MS = 2000;

/**
 * Watches camera `id` through the SFU `watch` points to, where it turned us
 * away ("full"); false for a pointer this page does not follow.
 */
function followSfu(id, name, watch) {
  if (watch?.kind !== "janus-videoroom" || typeof watch.room !== "number") return false;
  if (room.sfu.has(id)) return true;
  const tile = tileFor(id, name);
  tile.dataset.via = "sfu";
  window.meshcam.peers[id] = { ...(window.meshcam.peers[id] || {}), via: "sfu" };
  setBadge(id, "connecting");
  const holder = { id, pc: null, lastBytes: 0, lastAt: 0, link: null };
  holder.sub = new JanusSubscription(watch.url, watch.room, {
    iceServers: room.iceServers,
    onConnection: (pc) => {
      holder.pc = pc;
      pc.ontrack = (e) => showTrack(id, name, e, true);
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "connected") setBadge(id, "live");
        else if (pc.connectionState === "failed") retrySfu(id, name, watch);
      };
    },
    onError: (e) => {
      setStatus(`${id} via SFU: ${e.message}`);
      retrySfu(id, name, watch);
    },
  });
  room.sfu.set(id, holder);
  return true;
}

function stopSfu(id) {
  room.sfu.get(id)?.sub.close();
  room.sfu.delete(id);
}

function retrySfu(id, name, watch) {
  const holder = room.sfu.get(id);
  stopSfu(id);
  if (!holder) return;
  setBadge(id, "connecting");
  const current = room;
  setTimeout(() => room === current && room.full.has(id) && followSfu(id, name, watch), SFU_RETRY_MS);
}

// ── Signaling ────────────────────────────────────────────────────────────

function onPresence(id, payload) {
  if (id === room.me) return;
  const known = room.peers.get(id);
  if (payload.length === 0) {
    if (known) peerGone(known);
    if (room.full.delete(id)) {
      stopSfu(id);
      setBadge(id, "offline");
    }
    return;
  }
  const presence = decode(payload);
  if (!presence || presence.id !== id || !isSession(presence.session)) return;
  // A camera that turned this session away: it points where to watch once
  // it publishes there.
  if (room.full.get(id) === presence.session) {
    followSfu(id, presence.name, presence.watch);
    return;
  }
  if (room.full.delete(id)) {
    // A new session of that camera: the mesh may take us now.
    stopSfu(id);
    delete tileFor(id, presence.name).dataset.via;
  }
  if (known && known.presence.session === presence.session) {
    // The same session says something new: who talks, for one.
    known.presence = presence;
    known.talk?.show(presence.talk, room.me);
    return;
  }
  known?.close();
  const peer = new Peer(presence);
  room.peers.set(id, peer);
  if (iOffer(room.me, "viewer", presence) === true) peer.offer();
}

async function onSignal(from, payload) {
  const peer = room.peers.get(from);
  const msg = decode(payload);
  if (!peer || !msg) return; // from a stranger, or malformed
  if (msg.to_session !== room.session || msg.session !== peer.presence.session) return; // stale
  try {
    switch (msg.type) {
      case "offer": if (iOffer(room.me, "viewer", peer.presence) === false) await peer.answer(msg.sdp, offeredIceServers(msg)); break;
      case "answer": await peer.applyAnswer(msg.sdp); break;
      case "candidate": await peer.candidate(msg.candidate); break;
      case "talk": peer.talk?.onSignal(msg); break;
      case "bye":
        peerGone(peer);
        if (msg.reason === "full") {
          room.full.set(from, peer.presence.session);
          if (!followSfu(from, peer.presence.name, msg.watch ?? peer.presence.watch)) {
            setStatus(`${from} is full; try again later`);
          }
        }
        else if (msg.reason?.startsWith("no H.264")) setStatus(`${from} cannot stream to this browser: ${msg.reason}`);
        break;
    }
  } catch (e) {
    setStatus(`${from}: ${e.message}`);
  }
}

/** A peer left: a camera's tile stays, marked offline; a viewer's goes. */
function peerGone(peer) {
  peer.ended = true;
  peer.close();
  room.peers.delete(peer.id);
  if (peer.presence.role === "camera") setBadge(peer.id, "offline");
  else removeTile(peer.id);
}

/** A camera's telemetry: what it says of its connection to us. */
function onTelemetry(device, payload) {
  const telemetry = decode(payload);
  const peer = room.peers.get(device);
  if (!telemetry || telemetry.id !== device || !peer) return;
  peer.link = linkTo(telemetry, room.topics.room, room.me);
}

function onStatus(device, payload) {
  const status = decode(payload);
  if (!status || status.id !== device) return;
  if (status.state === "offline") {
    room.offline.add(device);
    setBadge(device, "offline");
    const peer = room.peers.get(device);
    if (!peer) return;
    // A camera going offline is a leave, unless media still flows.
    if (peer.pc?.iceConnectionState !== "connected" && peer.pc?.iceConnectionState !== "completed") {
      peer.close();
    }
  } else {
    room.offline.delete(device);
  }
}

function presencePayload() {
  return JSON.stringify({ v: VERSION, id: room.me, session: room.session, role: "viewer", name: room.name });
}

async function join({ broker, roomName, username, password, media }) {
  await leave();
  const me = params.get("id") || `web-${randomToken(8)}`;
  const topics = new Topics(params.get("prefix") || window.meshcamConfig?.prefix || "meshcam", roomName);
  const localStream = media ? await navigator.mediaDevices.getUserMedia({ video: true, audio: true }) : null;
  if (localStream) {
    const tile = tileFor(me, "me");
    tile.querySelector("video").srcObject = localStream;
    setBadge(me, "live");
  }
  room = {
    joinedAt: performance.now(), me, topics, localStream, session: randomToken(16), name: params.get("name") || me,
    peers: new Map(), offline: new Set(), iceServers: window.meshcamConfig?.iceServers || [],
    // Cameras that turned us away ("full"): their presence session, and
    // the subscriptions watching them through an SFU.
    full: new Map(), sfu: new Map(),
  };
  const client = mqtt.connect(broker, {
    clientId: me, username: username || undefined, password: password || undefined,
    protocolVersion: 4, clean: true, reconnectPeriod: 1000, connectTimeout: 10000,
    will: { topic: topics.presence(me), payload: "", qos: 1, retain: true },
  });
  room.client = client;
  client.on("connect", () => {
    // One subscribe request, acknowledged before our presence goes out.
    client.subscribe([topics.presences(), topics.inbox(me), topics.statuses(), topics.telemetry()], { qos: 1 }, (err) => {
      if (err || room?.client !== client) return;
      client.publish(topics.presence(me), presencePayload(), { qos: 1, retain: true });
      window.meshcam.connected = true;
      setStatus(`In room ${roomName} as ${me}`);
    });
  });
  client.on("offline", () => { window.meshcam.connected = false; setStatus("Broker unreachable, reconnecting…"); });
  client.on("error", (e) => setStatus(`Broker: ${e.message}`));
  client.on("message", (topic, payload) => {
    if (room?.client !== client) return;
    const t = topics.parse(topic);
    if (t?.kind === "presence") onPresence(t.peer, payload);
    else if (t?.kind === "signal" && t.to === me) onSignal(t.from, payload);
    else if (t?.kind === "status") onStatus(t.device, payload);
    else if (t?.kind === "telemetry") onTelemetry(t.device, payload);
  });
  $("#leave").hidden = false;
}

async function leave() {
  if (!room) return;
  const { client, topics, me, peers, localStream } = room;
  for (const peer of peers.values()) {
    peer.send({ type: "bye", reason: "leaving" });
    peer.close();
    removeTile(peer.id);
  }
  for (const id of [...room.sfu.keys()]) {
    stopSfu(id);
    removeTile(id);
  }
  client.publish(topics.presence(me), "", { qos: 1, retain: true });
  localStream?.getTracks().forEach((t) => t.stop());
  removeTile(me);
  room = null;
  window.meshcam.connected = false;
  await new Promise((resolve) => client.end(false, {}, resolve));
  $("#leave").hidden = true;
  setStatus("Not connected");
}

setInterval(() => {
  room?.peers.forEach((p) => p.updateStats());
  room?.sfu.forEach((s) => showStats(s));
}, 1000);
window.addEventListener("pagehide", () => { leave(); });

// ── Start-up ─────────────────────────────────────────────────────────────

async function start() {
  try {
    const response = await fetch("config.json");
    if (response.ok) window.meshcamConfig = await response.json();
  } catch {
    // Served from elsewhere: the URL or the form says where the broker is.
  }
  const form = $("#join");
  const config = window.meshcamConfig;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const broker = params.get("broker") || config?.broker || `${scheme}://${location.hostname || "localhost"}:${config?.ws_port || 9001}`;
  form.broker.value = broker;
  form.room.value = params.get("room") || window.meshcamConfig?.room || "";
  form.media.checked = params.get("media") === "1";
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    join({
      broker: form.broker.value, roomName: form.room.value, username: form.username.value,
      password: form.password.value, media: form.media.checked,
    }).catch((err) => setStatus(err.message));
  });
  $("#leave").addEventListener("click", () => leave());
  if (params.get("room")) form.requestSubmit();
}

start();
