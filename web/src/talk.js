// Talking back through a camera (PROTOCOL.md, "Talking back"): the talk
// button on a camera's tile, the floor's holder shown on every viewer's
// tile, and the microphone attached to the connection the page already has.
//
// The microphone is asked for when talking starts, not before: a viewer
// that never talks is never asked. It is attached to the camera's sound
// transceiver before the floor is requested, so the camera's next offer
// (sent once the floor is granted) is answered `sendrecv`; refused or done,
// it is detached and stopped.

/** A press shorter than this is a tap: it keeps the floor until the next tap (phones). */
const HOLD_MS = 400;

/** What the page says of a refusal or an end, by the camera's reason. */
const REASONS = {
  taken: (holder) => `${holder?.name || holder?.peer || "someone"} is talking`,
  off: () => "talking back is off",
  unavailable: () => "this camera cannot hear you on this connection",
  released: () => "you stopped talking",
  gone: () => "your connection ended",
  silent: () => "you were silent for too long",
  too_long: () => "you talked for the longest time allowed",
};

/**
 * The talk button of one camera's tile. `peer` is the page's connection to
 * the camera (`send(body)`, `pc`); `say(text)` shows a message;
 * `changed(state)` is told the state after every step, for the page's
 * `window.meshcam`.
 */
export class TalkButton {
  constructor(tile, peer, { say, changed }) {
    this.peer = peer;
    this.say = say;
    this.changed = changed;
    this.button = tile.querySelector(".talk");
    this.holderLabel = tile.querySelector(".talker");
    /** idle → asking → talking → idle. */
    this.state = "idle";
    this.mic = null;
    this.pressedAt = 0;
    this.latched = false;
    this.holder = null;
    this.reason = null;
    this.button.onpointerdown = (e) => { e.preventDefault(); this.press(); };
    this.button.onpointerup = () => this.lift();
    this.button.onpointercancel = () => this.lift();
    this.button.onkeydown = (e) => { if ((e.key === " " || e.key === "Enter") && !e.repeat) this.press(); };
    this.button.onkeyup = (e) => { if (e.key === " " || e.key === "Enter") this.lift(); };
  }

  /** The camera's presence `talk` (absent: it has no speaker); `me` is this page's id. */
  show(talk, me) {
    this.button.hidden = !talk;
    this.button.disabled = !talk?.enabled;
    this.button.title = talk?.enabled ? "Hold to talk; tap to talk until the next tap" : "Talking back is off";
    this.holder = talk?.holder ?? null;
    const others = this.holder && this.holder.peer !== me;
    this.holderLabel.textContent = others ? `${this.holder.name || this.holder.peer} is talking` : "";
    this.holderLabel.hidden = !others;
    this.report();
  }

  press() {
    if (this.state !== "idle") {
      // A tap that latched the floor: this press ends it.
      if (this.latched) this.release();
      return;
    }
    this.pressedAt = performance.now();
    this.latched = false;
    this.ask().catch((e) => { this.say(`microphone: ${e.message}`); this.reset(); });
  }

  lift() {
    if (this.state === "idle" || this.latched) return;
    if (performance.now() - this.pressedAt < HOLD_MS) {
      this.latched = true;
      this.report();
      return;
    }
    this.release();
  }

  /** The microphone, attached; then the request. */
  async ask() {
    this.state = "asking";
    this.reason = null;
    this.report();
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    if (this.state !== "asking") {
      mic.getTracks().forEach((t) => t.stop());
      return;
    }
    this.mic = mic;
    const transceiver = this.soundTransceiver();
    if (!transceiver) throw new Error("the camera offered no sound to talk on");
    await transceiver.sender.replaceTrack(mic.getAudioTracks()[0]);
    transceiver.direction = "sendrecv";
    this.peer.send({ type: "talk", action: "request" });
  }

  release() {
    if (this.state === "idle") return;
    this.peer.send({ type: "talk", action: "release" });
    this.reset();
  }

  /** A `talk` signal from the camera. */
  onSignal(msg) {
    if (msg.action === "granted" && this.state === "asking") {
      this.state = "talking";
      this.report();
    } else if (msg.action === "refused" || msg.action === "ended") {
      this.reason = msg.reason ?? null;
      const text = (REASONS[msg.reason] ?? (() => msg.reason))(msg.holder);
      if (msg.action === "refused" || msg.reason !== "released") this.say(`${this.peer.id}: ${text}`);
      this.reset();
    }
  }

  /** Back to listening: the microphone detached and stopped. */
  reset() {
    this.state = "idle";
    this.latched = false;
    if (this.mic) {
      const transceiver = this.soundTransceiver();
      if (transceiver && this.peer.pc?.signalingState !== "closed") {
        transceiver.sender.replaceTrack(null).catch(() => {});
        transceiver.direction = "recvonly";
      }
      this.mic.getTracks().forEach((t) => t.stop());
      this.mic = null;
    }
    this.report();
  }

  /** The transceiver of the camera's sound m-line. */
  soundTransceiver() {
    return this.peer.pc?.getTransceivers().find((t) => t.mid !== null && t.receiver.track.kind === "audio");
  }

  report() {
    this.button.textContent = { idle: "hold to talk", asking: "asking…", talking: this.latched ? "talking (tap to stop)" : "talking" }[this.state];
    this.button.setAttribute("aria-pressed", String(this.state !== "idle"));
    this.changed({ state: this.state, latched: this.latched, holder: this.holder, reason: this.reason });
  }
}
