// An independent meshcam viewer, written from PROTOCOL.md (version 1) alone:
// MQTT over WebSockets (mqtt.js, the global `mqtt`) for signaling and one
// plain RTCPeerConnection per camera in the room. It answers the cameras'
// offers (ICE restarts too), trickles candidates both ways and queues the
// ones that arrive before their offer.
//
// Observable on `window.independent`:
//   id, session, room       this participant
//   joinAt                  performance.now() when the presence was published
//   join()                  join now (only needed with ?manual=1)
//   state({ sdp })          plain-object snapshot; per camera, every connection
//                           generation with its offers/answers (with sdp: their
//                           SDPs and the candidates), its ICE/DTLS connected and
//                           first decoded frame times, framesDecoded (getStats)
//   replace(camera?)        close the camera's connection silently (no bye) and
//                           answer its next offer from a fresh RTCPeerConnection
//   leave(reason?)          bye to every camera, clear the presence, disconnect
//                           per camera also candidatesAt: when its
//                           candidates arrived
//   firstFrame(camera)      resolves when the camera's current connection has
//                           decoded its first frame (no polling: waiting costs
//                           the page nothing)
//   frames(camera)          a light reading for benchmarks: frames decoded on
//                           all its connections (getStats), offers received,
//                           connections made, frames presented, and the
//                           longest wait between two presented frames since
//                           the previous call (requestVideoFrameCallback on
//                           the camera's video element, which outlives its
//                           connections: a reconnection's gap is in it)
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const PREFIX = params.get("prefix") || "meshcam";
  const ROOM = params.get("room");
  const BROKER = params.get("broker");
  const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
  const SESSION_RE = /^[A-Za-z0-9_-]{8,64}$/;
  const MAX_PAYLOAD = 64 * 1024;
  const MAX_QUEUED = 256;

  function token(bytes) {
    const raw = String.fromCharCode(...crypto.getRandomValues(new Uint8Array(bytes)));
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  const me = params.get("id") || `v-${token(6)}`;
  const session = token(12); // 96 random bits, 16 characters
  const statusEl = document.getElementById("status");
  const camerasEl = document.getElementById("cameras");

  const topic = {
    peers: `${PREFIX}/rooms/${ROOM}/peers/+`,
    signalIn: `${PREFIX}/rooms/${ROOM}/signal/${me}/+`,
    presence: (id) => `${PREFIX}/rooms/${ROOM}/peers/${id}`,
    signalTo: (to) => `${PREFIX}/rooms/${ROOM}/signal/${to}/${me}`,
    status: (dev) => `${PREFIX}/devices/${dev}/status`,
  };
  const peersPrefix = `${PREFIX}/rooms/${ROOM}/peers/`;
  const signalPrefix = `${PREFIX}/rooms/${ROOM}/signal/${me}/`;
  const statusRe = new RegExp(`^${PREFIX.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/devices/([^/]+)/status$`);

  /** Current presence of every peer in the room, by id. */
  const peers = new Map();
  /** Camera records, by camera id. */
  const cameras = new Map();
  const events = [];
  const counters = { dropped: 0, received: 0, sent: 0 };
  let client = null;
  let joinAt = null;
  let joined = false;
  let left = false;
  let linkDownAt = null;
  let connects = 0;

  function note(text) {
    events.push(`${performance.now().toFixed(1)} ${text}`);
    if (events.length > 500) events.shift();
  }

  function drop(why) {
    counters.dropped += 1;
    note(`drop: ${why}`);
  }

  function showStatus() {
    const n = [...cameras.values()].filter((c) => c.conn && c.conn.pc.connectionState === "connected").length;
    statusEl.textContent = left ? "left" : `${me} in ${ROOM}: ${cameras.size} camera(s), ${n} connected`;
  }

  // ---- MQTT ----------------------------------------------------------------

  function publish(t, payload, opts = {}) {
    return new Promise((resolve) => {
      if (!client) return resolve(false);
      client.publish(t, payload, { qos: 1, ...opts }, (err) => resolve(!err));
    });
  }

  function send(cam, type, body = {}) {
    if (!cam.session) return;
    counters.sent += 1;
    publish(topic.signalTo(cam.id), JSON.stringify({ v: 1, type, session, to_session: cam.session, ...body }));
  }

  function presencePayload() {
    return JSON.stringify({ v: 1, id: me, session, role: "viewer", name: "independent viewer" });
  }

  function join() {
    if (client) return;
    if (!BROKER || !ROOM || !ID_RE.test(me) || !ID_RE.test(ROOM)) {
      statusEl.textContent = "needs ?broker=ws://…&room=… (and a valid id)";
      return;
    }
    client = mqtt.connect(BROKER, {
      clientId: me,
      protocolVersion: 4,
      clean: true,
      keepalive: 30,
      reconnectPeriod: 1000,
      resubscribe: false, // re-subscribed by hand, presence only after SUBACK
      will: { topic: topic.presence(me), payload: "", qos: 1, retain: true },
    });
    client.on("connect", onConnect);
    client.on("close", () => {
      if (linkDownAt === null) linkDownAt = performance.now();
    });
    client.on("message", onMessage);
    client.on("error", (e) => note(`mqtt error ${e.message}`));
  }

  function onConnect() {
    connects += 1;
    const reconnect = connects > 1;
    note(reconnect ? "mqtt reconnected" : "mqtt connected");
    // Who we knew before the link dropped, and the presence we had of each.
    const known = reconnect ? new Map([...cameras.keys()].map((id) => [id, peers.get(id)])) : null;
    // Both room subscriptions in ONE request; presence only after its SUBACK.
    client.subscribe([topic.peers, topic.signalIn], { qos: 1 }, (err, granted) => {
      if (err || granted.some((g) => g.qos === 128)) {
        note(`subscribe refused: ${err ? err.message : JSON.stringify(granted)}`);
        return;
      }
      joined = true;
      publish(topic.presence(me), presencePayload(), { retain: true });
      if (joinAt === null) joinAt = performance.now();
      note("presence published");
      if (known) afterReconnect(known);
      showStatus();
    });
    for (const cam of cameras.values()) client.subscribe(topic.status(cam.id), { qos: 1 });
  }

  /**
   * After our own reconnect, leaves and `offline` seen just before the link
   * dropped are decided again: a camera whose presence does not come back
   * within 10 s is gone, as is a camera still offline whose ICE is down.
   */
  function afterReconnect(known) {
    linkDownAt = null;
    for (const cam of cameras.values()) cam.suspect = false;
    setTimeout(() => {
      for (const [id, before] of known) {
        const now = peers.get(id);
        if (!now || now === before) {
          note(`presence of ${id} did not come back`);
          peerGone(id);
        }
      }
      for (const cam of cameras.values()) {
        if (cam.offline && cam.conn && !iceUp(cam.conn.pc)) closeConn(cam, "camera offline");
      }
    }, 10_000);
  }

  function onMessage(t, payload) {
    if (payload.length > MAX_PAYLOAD) return drop(`oversized on ${t}`);
    if (t.startsWith(peersPrefix)) return onPresence(t.slice(peersPrefix.length), payload);
    if (t.startsWith(signalPrefix)) return onSignal(t.slice(signalPrefix.length), payload);
    const m = t.match(statusRe);
    if (m) return onStatus(m[1], payload);
  }

  function parse(payload) {
    try {
      const msg = JSON.parse(new TextDecoder().decode(payload));
      return msg && typeof msg === "object" && !Array.isArray(msg) && msg.v === 1 ? msg : null;
    } catch {
      return null;
    }
  }

  // ---- presence and status -------------------------------------------------

  function onPresence(id, payload) {
    if (!ID_RE.test(id)) return drop(`presence topic id ${id}`);
    if (id === me) return;
    if (payload.length === 0) {
      // Cleared. If our link drops within 2 s, this news is not trusted.
      const cam = cameras.get(id);
      if (cam && cam.conn && iceUp(cam.conn.pc)) {
        cam.suspect = true;
        setTimeout(() => {
          if (cam.suspect && client && client.connected && linkDownAt === null) {
            cam.suspect = false;
            peerGone(id);
          }
        }, 2000);
        peers.delete(id);
        return;
      }
      peerGone(id);
      return;
    }
    const p = parse(payload);
    if (!p || p.id !== id || typeof p.session !== "string" || !SESSION_RE.test(p.session)) {
      return drop(`presence of ${id}`);
    }
    peers.set(id, p);
    if (p.role !== "camera") return; // this page watches cameras only
    let cam = cameras.get(id);
    if (!cam) {
      cam = newCamera(id);
      cameras.set(id, cam);
      if (client) client.subscribe(topic.status(id), { qos: 1 });
    }
    cam.suspect = false;
    if (cam.session !== p.session) {
      // A new join of that camera: whatever we held belongs to the old one.
      if (cam.conn) closeConn(cam, "new camera session");
      cam.session = p.session;
      cam.pending = [];
      cam.byeReceived = false;
      note(`camera ${id} session ${p.session}`);
    }
    cam.offline = false;
    cam.label.textContent = `${p.name || id} (${id})`;
    showStatus();
  }

  function onStatus(dev, payload) {
    const cam = cameras.get(dev);
    if (!cam || payload.length === 0) return;
    const s = parse(payload);
    if (!s || s.id !== dev) return drop(`status of ${dev}`);
    cam.status = s;
    if (s.state === "offline") {
      cam.offline = true;
      // Media is peer to peer: a connection whose ICE is up stays until ICE fails.
      if (cam.conn && !iceUp(cam.conn.pc)) {
        setTimeout(() => {
          if (cam.offline && cam.conn && client && client.connected && linkDownAt === null && !iceUp(cam.conn.pc)) {
            closeConn(cam, "camera offline");
          }
        }, 2000);
      }
    } else if (s.state === "online") {
      cam.offline = false;
    }
  }

  function peerGone(id) {
    peers.delete(id);
    const cam = cameras.get(id);
    if (!cam) return;
    if (cam.conn) closeConn(cam, "left");
    cameras.delete(id);
    cam.figure.remove();
    if (client) client.unsubscribe(topic.status(id));
    note(`camera ${id} gone`);
    showStatus();
  }

  // ---- signaling -----------------------------------------------------------

  function onSignal(from, payload) {
    counters.received += 1;
    const peer = peers.get(from);
    if (!peer) return drop(`signal from ${from}, not a current peer`);
    const msg = parse(payload);
    if (!msg || typeof msg.type !== "string") return drop(`signal from ${from}: bad payload`);
    if (msg.to_session !== session) return drop(`signal from ${from}: stale to_session`);
    if (msg.session !== peer.session) return drop(`signal from ${from}: stale session`);
    const cam = cameras.get(from);
    if (!cam) return drop(`signal from ${from}: not a camera`);
    if (msg.type === "candidate" && msg.candidate && cam.candidatesAt.length < 64) {
      cam.candidatesAt.push(performance.now());
    }
    // One message at a time per camera, in arrival order.
    cam.chain = cam.chain.then(() => handleSignal(cam, msg)).catch((e) => note(`signal ${msg.type} failed: ${e}`));
  }

  async function handleSignal(cam, msg) {
    switch (msg.type) {
      case "offer":
        if (typeof msg.sdp === "string") await onOffer(cam, msg.sdp);
        break;
      case "candidate":
        await onCandidate(cam, msg.candidate);
        break;
      case "bye":
        note(`bye from ${cam.id}: ${msg.reason}`);
        cam.byeReceived = true;
        cam.byes.push(String(msg.reason));
        if (cam.conn) closeConn(cam, `bye ${msg.reason}`);
        break;
      case "answer":
        drop(`answer from ${cam.id}: we never offer to cameras`);
        break;
      default:
        drop(`unknown signal type ${msg.type}`);
    }
  }

  function fingerprint(sdp) {
    const m = sdp && sdp.match(/^a=fingerprint:(.+)$/m);
    return m ? m[1].trim().toLowerCase() : null;
  }

  async function onOffer(cam, sdp) {
    let conn = cam.conn;
    // The same connection renegotiates (ICE restart); an offer from a fresh
    // connection of the camera (another DTLS fingerprint) gets a fresh one.
    if (conn && conn.pc.remoteDescription) {
      const dead = ["failed", "closed"].includes(conn.pc.connectionState);
      if (dead || fingerprint(sdp) !== fingerprint(conn.pc.remoteDescription.sdp)) {
        closeConn(cam, dead ? "connection dead, new offer" : "new camera fingerprint");
        conn = null;
      }
    }
    if (!conn) conn = openConn(cam);
    const at = performance.now();
    const restart = Boolean(conn.pc.remoteDescription);
    note(`offer for generation ${conn.generation}${restart ? " (renegotiation)" : ""}`);
    try {
      await conn.pc.setRemoteDescription({ type: "offer", sdp });
    } catch (e) {
      if (!restart) throw e;
      note(`renegotiation refused (${e.message}); answering from a fresh connection`);
      closeConn(cam, "renegotiation refused");
      conn = openConn(cam);
      await conn.pc.setRemoteDescription({ type: "offer", sdp });
    }
    conn.offers.push({ at, sdp, restart });
    const queued = cam.pending.splice(0);
    for (const c of queued) await addCandidate(conn, c);
    const answer = await conn.pc.createAnswer();
    await conn.pc.setLocalDescription(answer);
    const local = conn.pc.localDescription.sdp;
    conn.answers.push({ at: performance.now(), sdp: local });
    send(cam, "answer", { sdp: local });
  }

  async function onCandidate(cam, candidate) {
    const conn = cam.conn;
    if (!conn || !conn.pc.remoteDescription) {
      // Before the offer it belongs to: queue, don't drop.
      if (cam.pending.length < MAX_QUEUED) cam.pending.push(candidate);
      else drop("candidate queue full");
      return;
    }
    await addCandidate(conn, candidate);
  }

  async function addCandidate(conn, c) {
    try {
      if (c === null || c === undefined) {
        await conn.pc.addIceCandidate({ candidate: "" }); // end-of-candidates
      } else if (typeof c === "object" && typeof c.candidate === "string") {
        await conn.pc.addIceCandidate({
          candidate: c.candidate,
          sdpMid: c.sdpMid ?? null,
          sdpMLineIndex: c.sdpMLineIndex ?? null,
        });
        conn.remoteCandidates += 1;
        if (conn.candidateLog.length < 64) conn.candidateLog.push(`remote ${c.candidate}`);
      } else {
        drop("malformed candidate");
      }
    } catch (e) {
      note(`candidate not added: ${e.message}`);
    }
  }

  // ---- connections ---------------------------------------------------------

  function newCamera(id) {
    const figure = document.createElement("figure");
    const video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    const label = document.createElement("figcaption");
    label.textContent = id;
    figure.append(video, label);
    camerasEl.append(figure);
    return {
      id, session: null, status: null, offline: false, suspect: false, byeReceived: false,
      conn: null, conns: [], generations: 0, pending: [], byes: [], candidatesAt: [],
      chain: Promise.resolve(), figure, video, label,
      watching: false, presented: 0, lastPresentedAt: null, longestGap: 0,
    };
  }

  /** Counts the frames the camera's video element presents, and the gaps between them. */
  function watchPresented(cam) {
    if (cam.watching || !("requestVideoFrameCallback" in cam.video)) return;
    cam.watching = true;
    const step = (now) => {
      if (cam.lastPresentedAt !== null) cam.longestGap = Math.max(cam.longestGap, now - cam.lastPresentedAt);
      cam.lastPresentedAt = now;
      cam.presented += 1;
      cam.video.requestVideoFrameCallback(step);
    };
    cam.video.requestVideoFrameCallback(step);
  }

  function iceUp(pc) {
    return pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed";
  }

  function openConn(cam) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    const conn = {
      generation: ++cam.generations, pc, createdAt: performance.now(), closedAt: null,
      closeReason: null, replacedAt: null, offers: [], answers: [], firstFrameAt: null,
      firstFrameBy: null, iceConnectedAt: null, connectedAt: null, framesDecoded: 0, frameWidth: null, frameHeight: null,
      localCandidates: 0, remoteCandidates: 0, candidateLog: [], states: [], stream: null,
    };
    cam.conn = conn;
    cam.conns.push(conn);
    pc.onicecandidate = (e) => {
      if (cam.conn !== conn) return;
      if (!e.candidate || !e.candidate.candidate) {
        send(cam, "candidate", { candidate: null });
        return;
      }
      conn.localCandidates += 1;
      if (conn.candidateLog.length < 64) conn.candidateLog.push(`local ${e.candidate.candidate}`);
      const { candidate, sdpMid, sdpMLineIndex } = e.candidate;
      send(cam, "candidate", { candidate: { candidate, sdpMid, sdpMLineIndex } });
    };
    pc.ontrack = (e) => {
      if (cam.conn !== conn) return;
      if (!conn.stream) conn.stream = new MediaStream();
      conn.stream.addTrack(e.track);
      if (cam.video.srcObject !== conn.stream) cam.video.srcObject = conn.stream;
      cam.video.play().catch(() => {});
      if (e.track.kind === "video") {
        watchPresented(cam);
        if ("requestVideoFrameCallback" in cam.video) {
          cam.video.requestVideoFrameCallback(() => firstFrame(cam, conn, "requestVideoFrameCallback"));
        }
        cam.video.addEventListener("loadeddata", () => {
          if (cam.conn === conn) firstFrame(cam, conn, "loadeddata");
        }, { once: true });
      }
    };
    const track = () => {
      if (conn.iceConnectedAt === null && iceUp(pc)) conn.iceConnectedAt = performance.now();
      if (conn.connectedAt === null && pc.connectionState === "connected") conn.connectedAt = performance.now();
      conn.states.push(`${(performance.now() - conn.createdAt).toFixed(0)}ms ice=${pc.iceConnectionState} pc=${pc.connectionState}`);
      showStatus();
    };
    pc.oniceconnectionstatechange = track;
    pc.onconnectionstatechange = () => {
      track();
      // A connection that fails is the camera's to offer again; a leave
      // announced while the link was up and ICE held is now final.
      if (pc.connectionState === "failed" && cam.suspect && cameras.get(cam.id) === cam) peerGone(cam.id);
    };
    pollFirstFrame(cam, conn);
    return conn;
  }

  function firstFrame(cam, conn, by) {
    if (conn.firstFrameAt !== null || conn.closedAt !== null) return;
    conn.firstFrameAt = performance.now();
    conn.firstFrameBy = by;
    note(`first frame of generation ${conn.generation} (${by})`);
    for (const wake of frameWaiters.splice(0)) wake();
  }

  /** Wakes a `firstFrame(camera)` caller on every first frame. */
  const frameWaiters = [];

  function firstFrameOf(cameraId) {
    const seen = () => {
      const conn = cameras.get(cameraId)?.conn;
      return conn && conn.firstFrameAt !== null;
    };
    return new Promise((resolve) => {
      const check = () => (seen() ? resolve() : frameWaiters.push(check));
      check();
    });
  }

  /**
   * getStats as a last witness of the first frame, should the video element
   * report none (a page in the background). Slow on purpose: getStats is
   * costly, and eight tabs polling it would slow what they measure.
   */
  async function pollFirstFrame(cam, conn) {
    while (conn.firstFrameAt === null && conn.closedAt === null) {
      await new Promise((r) => setTimeout(r, 500));
      if (conn.closedAt !== null) return;
      try {
        await readStats(conn);
        if (conn.framesDecoded > 0) firstFrame(cam, conn, "getStats");
      } catch {
        return;
      }
    }
  }

  async function readStats(conn) {
    if (conn.closedAt !== null) return;
    const report = await conn.pc.getStats();
    for (const s of report.values()) {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        conn.framesDecoded = s.framesDecoded ?? 0;
        conn.frameWidth = s.frameWidth ?? null;
        conn.frameHeight = s.frameHeight ?? null;
      }
    }
  }

  function closeConn(cam, reason) {
    const conn = cam.conn;
    if (!conn) return;
    cam.conn = null;
    conn.closedAt = performance.now();
    conn.closeReason = reason;
    conn.pc.close();
    if (cam.video.srcObject === conn.stream) cam.video.srcObject = null;
    note(`closed generation ${conn.generation}: ${reason}`);
    showStatus();
  }

  // ---- controls ------------------------------------------------------------

  function pickCamera(id) {
    const cam = id ? cameras.get(id) : cameras.values().next().value;
    if (!cam) throw new Error(`no camera ${id ?? ""}`);
    return cam;
  }

  /** As a crashed tab restored in place: no bye, same presence, a new RTCPeerConnection. */
  function replace(id) {
    const cam = pickCamera(id);
    const old = cam.conn;
    if (old) {
      old.replacedAt = performance.now();
      closeConn(cam, "replaced");
    }
    cam.pending = [];
    return openConn(cam).generation;
  }

  async function leave(reason = "leaving") {
    if (left) return;
    left = true;
    for (const cam of cameras.values()) {
      if (cam.conn) {
        send(cam, "bye", { reason });
        closeConn(cam, "leaving");
      }
    }
    if (client) {
      await publish(topic.presence(me), "", { retain: true });
      await new Promise((r) => client.end(false, {}, r));
    }
    note("left");
    showStatus();
  }

  async function state({ sdp = false } = {}) {
    const out = {
      id: me, session, room: ROOM, joined, left, joinAt, connected: Boolean(client && client.connected),
      counters: { ...counters }, events: events.slice(-100), cameras: {},
    };
    for (const cam of cameras.values()) {
      if (cam.conn) await readStats(cam.conn).catch(() => {});
      out.cameras[cam.id] = {
        id: cam.id, session: cam.session, status: cam.status, byes: cam.byes, candidatesAt: cam.candidatesAt,
        generation: cam.conn ? cam.conn.generation : null,
        videoWidth: cam.video.videoWidth, videoHeight: cam.video.videoHeight,
        conns: cam.conns.map((c) => ({
          generation: c.generation, createdAt: c.createdAt, closedAt: c.closedAt, closeReason: c.closeReason,
          replacedAt: c.replacedAt, iceConnectedAt: c.iceConnectedAt, connectedAt: c.connectedAt,
          firstFrameAt: c.firstFrameAt, firstFrameBy: c.firstFrameBy,
          framesDecoded: c.framesDecoded, frameWidth: c.frameWidth, frameHeight: c.frameHeight,
          connectionState: c.pc.connectionState, iceConnectionState: c.pc.iceConnectionState,
          localCandidates: c.localCandidates, remoteCandidates: c.remoteCandidates, states: c.states,
          offers: c.offers.map((o) => ({ at: o.at, restart: o.restart, ...(sdp ? { sdp: o.sdp } : {}) })),
          answers: c.answers.map((a) => ({ at: a.at, ...(sdp ? { sdp: a.sdp } : {}) })),
          ...(sdp ? { candidates: c.candidateLog } : {}),
        })),
      };
    }
    return out;
  }

  async function frames(id) {
    const cam = pickCamera(id);
    if (cam.conn) await readStats(cam.conn).catch(() => {});
    const gap = cam.longestGap;
    cam.longestGap = 0;
    return {
      decoded: cam.conns.reduce((n, c) => n + c.framesDecoded, 0),
      offers: cam.conns.reduce((n, c) => n + c.offers.length, 0),
      connections: cam.conns.length,
      presented: cam.presented,
      gapMs: gap,
    };
  }

  window.independent = {
    id: me, session, room: ROOM,
    get joinAt() { return joinAt; },
    join, leave, replace, state, firstFrame: firstFrameOf, frames,
  };
  if (params.get("manual") !== "1") join();
  else statusEl.textContent = "ready";
})();
