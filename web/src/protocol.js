// PROTOCOL.md for the browser: topics, ids, who offers, message checks.

export const VERSION = 1;

const TOKEN = /^[A-Za-z0-9_-]+$/;

export function isPeerId(s) {
  return typeof s === "string" && s.length >= 1 && s.length <= 64 && TOKEN.test(s);
}

export function isSession(s) {
  return typeof s === "string" && s.length >= 8 && s.length <= 64 && TOKEN.test(s);
}

export function randomToken(length) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

export class Topics {
  constructor(prefix, room) {
    this.prefix = prefix;
    this.room = room;
  }
  presence(id) { return `${this.prefix}/rooms/${this.room}/peers/${id}`; }
  presences() { return `${this.prefix}/rooms/${this.room}/peers/+`; }
  signal(to, from) { return `${this.prefix}/rooms/${this.room}/signal/${to}/${from}`; }
  inbox(me) { return `${this.prefix}/rooms/${this.room}/signal/${me}/+`; }
  statuses() { return `${this.prefix}/devices/+/status`; }
  telemetry() { return `${this.prefix}/devices/+/stats`; }

  /** {kind, ...} for a topic we subscribed to, or null. */
  parse(topic) {
    const levels = topic.split("/");
    const base = this.prefix.split("/").length;
    const rest = levels.slice(base);
    if (levels.slice(0, base).join("/") !== this.prefix) return null;
    if (rest[0] === "devices" && rest[2] === "status" && rest.length === 3 && isPeerId(rest[1])) {
      return { kind: "status", device: rest[1] };
    }
    if (rest[0] === "devices" && rest[2] === "stats" && rest.length === 3 && isPeerId(rest[1])) {
      return { kind: "telemetry", device: rest[1] };
    }
    if (rest[0] !== "rooms" || rest[1] !== this.room) return null;
    if (rest[2] === "peers" && rest.length === 4 && isPeerId(rest[3])) {
      return { kind: "presence", peer: rest[3] };
    }
    if (rest[2] === "signal" && rest.length === 5 && isPeerId(rest[3]) && isPeerId(rest[4])) {
      return { kind: "signal", to: rest[3], from: rest[4] };
    }
    return null;
  }
}

/** true if we offer to `peer`, false if it offers, null for no connection. */
export function iOffer(me, myRole, peer) {
  if (myRole === "camera" && peer.role === "camera") return null;
  if (myRole === "camera") return true;
  if (peer.role === "camera") return false;
  return me < peer.id; // ids are ASCII: string order is byte order
}

/** Parses a JSON payload of at most 64 KiB with v = 1; null otherwise. */
export function decode(payload) {
  if (payload.length > 64 * 1024) return null;
  try {
    const msg = JSON.parse(new TextDecoder().decode(payload));
    return msg && typeof msg === "object" && msg.v === VERSION ? msg : null;
  } catch {
    return null;
  }
}

/**
 * What a camera's telemetry says about its connection to `me` in `room`:
 * the layer it sends us and what it estimates of our link; null when it
 * has none (yet).
 */
export function linkTo(telemetry, room, me) {
  const c = Array.isArray(telemetry?.connections)
    ? telemetry.connections.find((c) => c && c.room === room && c.peer === me)
    : null;
  if (!c || typeof c.layer !== "number") return null;
  return {
    layer: c.layer,
    width: c.layer_width,
    height: c.layer_height,
    pinned: c.layer_pinned ?? null,
    switches: c.layer_switches ?? 0,
    estimator: c.estimator,
    estimateKbps: c.estimate_kbps,
    loss: c.loss ?? 0,
  };
}

/**
 * The ICE servers a camera's offer gives this viewer (`ice_servers`, with
 * credentials minted for it), in RTCIceServer shape; what does not parse
 * is left out.
 */
export function offeredIceServers(msg) {
  if (!Array.isArray(msg?.ice_servers)) return [];
  return msg.ice_servers.filter((s) =>
    s && Array.isArray(s.urls) && s.urls.every((u) => typeof u === "string")
    && (s.username === undefined || typeof s.username === "string")
    && (s.credential === undefined || typeof s.credential === "string"));
}
