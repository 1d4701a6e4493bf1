// Watching a camera through a Janus VideoRoom, where the camera points a
// viewer it turned away ("full", PROTOCOL.md "Watching from an SFU",
// kind "janus-videoroom"): Janus's HTTP API as its own clients use it.
// Create a session, attach the VideoRoom plugin, find the room's publisher,
// join as a subscriber; Janus offers, we answer with "start". Events come by
// long poll, which also keeps the session alive.

const PLUGIN = "janus.plugin.videoroom";
const PUBLISHER_POLL_MS = 500;

let transactions = 0;

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ transaction: `t${++transactions}`, ...body }),
  });
  if (!response.ok) throw new Error(`Janus: ${response.status} ${response.statusText}`);
  const reply = await response.json();
  if (reply.janus === "error") throw new Error(`Janus: ${reply.error?.reason}`);
  return reply;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One subscription to the publisher of a VideoRoom room. */
export class JanusSubscription {
  /**
   * @param {string} api the Janus HTTP API (`watch.url`)
   * @param {number} room the VideoRoom room (`watch.room`)
   * @param {(pc: RTCPeerConnection) => void} onConnection the subscriber's connection, once made
   */
  constructor(api, room, { iceServers = [], onConnection = () => {}, onError = () => {} } = {}) {
    this.api = api.replace(/\/+$/, "");
    this.room = room;
    this.iceServers = iceServers;
    this.onConnection = onConnection;
    this.onError = onError;
    this.closed = false;
    this.pc = null;
    this.run().catch((e) => { if (!this.closed) this.onError(e); });
  }

  async run() {
    const created = await post(this.api, { janus: "create" });
    this.session = `${this.api}/${created.data.id}`;
    const attached = await post(this.session, { janus: "attach", plugin: PLUGIN });
    this.handle = `${this.session}/${attached.data.id}`;
    const feed = await this.publisher();
    await this.message({ request: "join", ptype: "subscriber", room: this.room, streams: [{ feed }] });
    while (!this.closed) {
      const response = await fetch(`${this.session}?maxev=1`);
      const event = await response.json();
      if (event.plugindata?.data?.error) throw new Error(`Janus: ${event.plugindata.data.error}`);
      if (event.jsep?.type === "offer") await this.answer(event.jsep.sdp);
      if (event.janus === "hangup") throw new Error(`Janus hung up: ${event.reason}`);
    }
  }

  /** The feed id of the room's publisher, once there is one. */
  async publisher() {
    while (!this.closed) {
      const reply = await this.message({ request: "listparticipants", room: this.room });
      const data = reply.plugindata?.data;
      if (data?.error) throw new Error(`Janus room ${this.room}: ${data.error}`);
      const feed = data?.participants?.find((p) => p.publisher)?.id;
      if (feed) return feed;
      await sleep(PUBLISHER_POLL_MS);
    }
    throw new Error("closed");
  }

  message(body, jsep) {
    return post(this.handle, { janus: "message", body, ...(jsep ? { jsep } : {}) });
  }

  async answer(sdp) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc?.close();
    this.pc = pc;
    pc.onicecandidate = (e) => {
      const candidate = e.candidate ? e.candidate.toJSON() : { completed: true };
      post(this.handle, { janus: "trickle", candidate }).catch(() => {});
    };
    this.onConnection(pc);
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await this.message({ request: "start" }, { type: "answer", sdp: pc.localDescription.sdp });
  }

  close() {
    this.closed = true;
    this.pc?.close();
    if (this.session) post(this.session, { janus: "destroy" }).catch(() => {});
  }
}
