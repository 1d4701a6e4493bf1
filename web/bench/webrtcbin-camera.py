#!/usr/bin/python3
"""A camera on GStreamer's webrtcbin speaking PROTOCOL.md version 1.

It exists to compare join → first frame of meshcam against a webrtcbin
camera with the same independent Chromium page
(`node web/bench/first-frame.mjs --camera webrtcbin`). It is a benchmark
instrument, not a part of meshcam: ICE is libnice, DTLS is OpenSSL, RTP is
GStreamer's rtpbin.

It joins one room as a camera: retained presence with a new session, a
retained status (`online`, and `viewers` whenever the count changes), one
webrtcbin per viewer present in the room offering send-only H.264, answers
applied, candidates trickled both ways (ours once the answer is applied). A
viewer's bye or cleared presence tears its webrtcbin down. The video is
encoded once and a tee feeds every viewer's webrtcbin:

    videotestsrc is-live=true ! 640x360 at 30 fps
      ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=800 key-int-max=60
      ! rtph264pay config-interval=-1 ! H.264 payload 102 ! tee

webrtcbin's plugins and its DTLS certificate are made ready at start (see
warm_up). A key frame is forced when a viewer's connection comes up; rtpbin
passes a viewer's PLI up to the encoder as a force-key-unit event.

Being in one room only, its MQTT will is that room's empty retained presence
(not, as PROTOCOL.md's camera has, an `offline` status), so a camera that
vanishes leaves. On SIGTERM or SIGINT it says bye to every viewer
("shutdown"), clears its presence and publishes `offline`. Not implemented,
as a join does not need them: commands, telemetry, ICE restarts and new
offers after a failure. Remote mDNS (.local) candidates are dropped, not
resolved: the viewer's checks reach our host candidates and ICE pairs them
as peer-reflexive.

Says what happens as JSON lines on stdout:

    {"event":"ready","id":...,"session":...}    presence published
    {"event":"viewer","peer":...,"session":...}  an offer made to a viewer
    {"event":"state","peer":...,"connection":...}
    {"event":"closed","peer":...,"why":...}
    {"event":"dropped","why":...} / {"event":"error","message":...}

Usage: webrtcbin-camera.py --broker mqtt://HOST:PORT --room R [--id cam1]
       [--max-viewers 8] [--prefix meshcam]
"""

import argparse
import json
import re
import secrets
import sys
import threading
import time
from urllib.parse import urlparse

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstVideo", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstVideo, GstWebRTC  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402

WIDTH, HEIGHT, FPS, BITRATE_KBPS = 640, 360, 30, 800
ENCODE = (
    f"videotestsrc is-live=true ! video/x-raw,width={WIDTH},height={HEIGHT},framerate={FPS}/1"
    f" ! x264enc name=enc tune=zerolatency speed-preset=ultrafast bitrate={BITRATE_KBPS}"
    " key-int-max=60 ! rtph264pay config-interval=-1"
    " ! application/x-rtp,media=video,encoding-name=H264,payload=102"
    " ! tee name=tee allow-not-linked=true"
)
MAX_PAYLOAD = 64 * 1024
STATUS_DELAY_MS = 50  # status republished at most this often

_print_lock = threading.Lock()


def emit(event, **fields):
    fields = {"event": event, **fields}
    with _print_lock:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def in_main(fn, *args):
    """Runs fn(*args) on the GLib main loop (every state change happens there)."""

    def run():
        try:
            fn(*args)
        except Exception as e:  # keep the loop alive, say what broke
            emit("error", message=f"{type(e).__name__}: {e}")
        return False

    GLib.idle_add(run)


def sdp_mids(sdp):
    """mid of every m-line, in order (None where there is none)."""
    mids = []
    for section in re.split(r"^m=", sdp, flags=re.M)[1:]:
        m = re.search(r"^a=mid:(\S+)", section, re.M)
        mids.append(m.group(1) if m else None)
    return mids


class Connection:
    """One webrtcbin offering the video to one viewer session."""

    def __init__(self, camera, peer, remote_session):
        self.camera = camera
        self.peer = peer
        self.remote_session = remote_session
        self.offered = False
        self.closed = False
        self.mids = []
        self.answered = False  # the answer applied
        self.held = []  # our candidates until then
        pipeline = camera.pipeline
        self.queue = Gst.ElementFactory.make("queue")
        Gst.util_set_object_arg(self.queue, "leaky", "downstream")  # one slow viewer stalls no other
        self.webrtc = Gst.ElementFactory.make("webrtcbin")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("on-ice-candidate", self._on_ice_candidate)
        for prop in ("connection-state", "ice-gathering-state"):
            self.webrtc.connect(f"notify::{prop}", self._on_notify)
        pipeline.add(self.queue)
        pipeline.add(self.webrtc)
        sink = self.webrtc.request_pad_simple("sink_%u")
        sink.get_property("transceiver").set_property(
            "direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
        )
        self.queue.get_static_pad("src").link(sink)
        self.webrtc.sync_state_with_parent()
        self.queue.sync_state_with_parent()
        self.tee_pad = camera.tee.request_pad_simple("src_%u")
        self.tee_pad.link(self.queue.get_static_pad("sink"))

    def current(self):
        return not self.closed and self.camera.conns.get(self.peer) is self

    def close(self):
        if self.closed:
            return
        self.closed = True
        pipeline = self.camera.pipeline
        self.tee_pad.unlink(self.queue.get_static_pad("sink"))
        self.camera.tee.release_request_pad(self.tee_pad)
        for element in (self.queue, self.webrtc):
            pipeline.remove(element)
            element.set_state(Gst.State.NULL)

    # --- negotiation ---

    def _on_negotiation_needed(self, _webrtc):
        in_main(self._offer)

    def _offer(self):
        if self.offered or not self.current():
            return
        self.offered = True
        promise = Gst.Promise.new_with_change_func(self._on_offer, None)
        self.webrtc.emit("create-offer", None, promise)

    def _on_offer(self, promise, _):
        # The offer lives in the promise's reply: use it here, before the
        # reply is freed, and hand only its text to the main loop.
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            error = reply.get_value("error") if reply is not None else None
            in_main(emit, "error", message=f"create-offer failed: {error}")
            return
        # Queued before set-local-description starts gathering: the offer,
        # and its mids, are there before any of its candidates.
        in_main(self._send_offer, offer.sdp.as_text())
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def _send_offer(self, text):
        if not self.current():
            return
        self.mids = sdp_mids(text)
        self.camera.send(self.peer, self.remote_session, {"type": "offer", "sdp": text})
        emit("viewer", peer=self.peer, session=self.remote_session)

    def take_answer(self, sdp):
        _, msg = GstSdp.SDPMessage.new()
        if GstSdp.sdp_message_parse_buffer(sdp.encode(), msg) != GstSdp.SDPResult.OK:
            emit("error", message="answer SDP does not parse")
            return
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        promise = Gst.Promise.new_with_change_func(lambda _p, _: in_main(self._answer_applied), None)
        self.webrtc.emit("set-remote-description", answer, promise)

    def _answer_applied(self):
        self.answered = True
        held, self.held = self.held, []
        for candidate in held:
            self._send_candidate(candidate)

    def add_candidate(self, cand):
        """A remote candidate object from the wire, or None (end of candidates).
        webrtcbin runs these in order after the answer, and itself holds any
        that come before it."""
        text = None if cand is None else cand.get("candidate")
        if cand is not None and not isinstance(text, str):
            emit("dropped", why="candidate without text", peer=self.peer)
            return
        if not text:
            for index in range(max(1, len(self.mids))):
                self.webrtc.emit("add-ice-candidate", index, None)
            return
        parts = text.split()
        if len(parts) > 4 and parts[4].endswith(".local"):
            return  # mDNS: not resolved here (see the header)
        index = cand.get("sdpMLineIndex")
        if not isinstance(index, int):
            mid = cand.get("sdpMid")
            index = self.mids.index(mid) if mid in self.mids else 0
        self.webrtc.emit("add-ice-candidate", index, text)

    # --- webrtcbin callbacks (streaming threads) ---

    def _on_ice_candidate(self, _webrtc, mline, candidate):
        in_main(self._on_candidate, mline, candidate)

    def _on_candidate(self, mline, candidate):
        text = candidate[2:] if candidate.startswith("a=") else candidate
        mid = self.mids[mline] if mline < len(self.mids) and self.mids[mline] else str(mline)
        self._send_candidate({"candidate": text, "sdpMid": mid, "sdpMLineIndex": mline})

    def _send_candidate(self, candidate):
        """Sends one of our candidates (None: end of candidates) once the
        answer is applied, as PROTOCOL.md has the offerer do."""
        if not self.current():
            return
        if not self.answered:
            self.held.append(candidate)
            return
        self.camera.send(self.peer, self.remote_session, {"type": "candidate", "candidate": candidate})

    def _on_notify(self, webrtc, pspec):
        value = webrtc.get_property(pspec.name)
        in_main(self._state_changed, pspec.name, value)

    def _state_changed(self, name, value):
        if not self.current():
            return
        nick = value.value_nick
        if name == "ice-gathering-state":
            if nick == "complete":
                self._send_candidate(None)
            return
        emit("state", peer=self.peer, connection=nick)
        if nick == "connected":
            self.camera.keyframe()


class Camera:
    def __init__(self, args):
        self.prefix = args.prefix
        self.room = args.room
        self.id = args.id
        self.max_viewers = args.max_viewers
        self.session = secrets.token_urlsafe(12)
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.peers = {}  # id -> presence
        self.conns = {}  # viewer id -> Connection
        self.ended = set()  # (peer, session) that sent or got a bye
        self.status_due = False
        self.stopping = False
        self.loop = GLib.MainLoop()
        self.pipeline = Gst.parse_launch(ENCODE)
        self.tee = self.pipeline.get_by_name("tee")
        self.encoder = self.pipeline.get_by_name("enc")

        url = urlparse(args.broker)
        if url.scheme not in ("mqtt", "tcp", ""):
            raise SystemExit(f"only mqtt:// brokers are supported, not {args.broker}")
        self.broker_host = url.hostname or "127.0.0.1"
        self.broker_port = url.port or 1883
        kwargs = dict(client_id=self.id, clean_session=True, protocol=mqtt.MQTTv311)
        if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
            self.mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, **kwargs)
        else:  # paho-mqtt 1.x (Debian 12)
            self.mqtt = mqtt.Client(**kwargs)
        self.mqtt.will_set(self.presence_topic(), payload=b"", qos=1, retain=True)
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.on_message = self._on_message
        self.join_mid = None

    # --- topics ---

    def presence_topic(self, peer=None):
        return f"{self.prefix}/rooms/{self.room}/peers/{peer or self.id}"

    def signal_topic(self, to, sender):
        return f"{self.prefix}/rooms/{self.room}/signal/{to}/{sender}"

    def status_topic(self):
        return f"{self.prefix}/devices/{self.id}/status"

    # --- MQTT (paho's thread) ---

    def _on_connect(self, client, _userdata, _flags, rc):
        if rc != 0:
            emit("error", message=f"broker refused the connection: {rc}")
            return
        # Presences and our inbox in ONE subscribe; presence after its SUBACK.
        _, self.join_mid = client.subscribe(
            [(self.presence_topic("+"), 1), (self.signal_topic(self.id, "+"), 1)]
        )
        in_main(self.publish_status)

    def _on_subscribe(self, _client, _userdata, mid, _granted):
        if mid == self.join_mid:
            in_main(self._announce)

    def _announce(self):
        if self.stopping:
            return
        presence = {"v": 1, "id": self.id, "session": self.session, "role": "camera", "name": self.id}
        self.mqtt.publish(self.presence_topic(), json.dumps(presence), qos=1, retain=True)
        emit("ready", id=self.id, session=self.session)

    def _on_message(self, _client, _userdata, msg):
        in_main(self._handle, msg.topic, bytes(msg.payload))

    def send(self, to, to_session, message):
        message = {"v": 1, "session": self.session, "to_session": to_session, **message}
        return self.mqtt.publish(self.signal_topic(to, self.id), json.dumps(message), qos=1)

    def status(self, state):
        return {
            "v": 1, "state": state, "id": self.id, "name": self.id, "version": f"webrtcbin {Gst.version_string()}",
            "rooms": [self.room], "viewers": len(self.conns), "max_viewers": self.max_viewers,
            "video": {"codec": "H264", "width": WIDTH, "height": HEIGHT, "fps": FPS},
            "started_at": self.started_at,
        }

    def publish_status(self):
        self.status_due = False
        if not self.stopping:
            self.mqtt.publish(self.status_topic(), json.dumps(self.status("online")), qos=1, retain=True)

    def viewers_changed(self):
        if not self.status_due:
            self.status_due = True
            GLib.timeout_add(STATUS_DELAY_MS, lambda: self.publish_status() or False)

    # --- inbound (main loop) ---

    def _handle(self, topic, payload):
        levels = topic.split("/")
        base = self.prefix.split("/")
        rest = levels[len(base) :]
        if levels[: len(base)] != base or self.stopping:
            return
        if len(rest) == 4 and rest[:3] == ["rooms", self.room, "peers"]:
            self._presence(rest[3], payload)
        elif len(rest) == 5 and rest[:3] == ["rooms", self.room, "signal"] and rest[3] == self.id:
            self._signal(rest[4], payload)

    def _parse(self, payload):
        if len(payload) > MAX_PAYLOAD:
            return None
        try:
            value = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(value, dict) or value.get("v") != 1:
            return None
        return value

    def _presence(self, peer, payload):
        if peer == self.id:
            return
        if not payload:
            self.peers.pop(peer, None)
            self._drop_conn(peer, "presence cleared")
            return
        presence = self._parse(payload)
        if presence is None or presence.get("id") != peer or not presence.get("session"):
            emit("dropped", why="bad presence", peer=peer)
            return
        self.peers[peer] = presence
        session = presence["session"]
        conn = self.conns.get(peer)
        if presence.get("role") != "viewer" or (conn is not None and conn.remote_session == session):
            return  # cameras do not connect to each other; a known session keeps its connection
        self._drop_conn(peer, "new session")
        if (peer, session) in self.ended:
            return
        if len(self.conns) >= self.max_viewers:
            self.send(peer, session, {"type": "bye", "reason": "full"})
            self.ended.add((peer, session))
            return
        self.conns[peer] = Connection(self, peer, session)
        self.viewers_changed()

    def _signal(self, sender, payload):
        message = self._parse(payload)
        if message is None:
            emit("dropped", why="unparsable signal", peer=sender)
            return
        presence = self.peers.get(sender)
        if presence is None:
            emit("dropped", why="signal from a peer not in the room", peer=sender)
            return
        session = message.get("session")
        if message.get("to_session") != self.session or session != presence.get("session"):
            emit("dropped", why="stale session", peer=sender, type=message.get("type"))
            return
        conn = self.conns.get(sender)
        if conn is None or conn.remote_session != session:
            emit("dropped", why="no connection for that session", peer=sender, type=message.get("type"))
            return
        kind = message.get("type")
        if kind == "answer" and isinstance(message.get("sdp"), str):
            conn.take_answer(message["sdp"])
        elif kind == "candidate" and "candidate" in message:
            cand = message["candidate"]
            if cand is None or isinstance(cand, dict):
                conn.add_candidate(cand)
        elif kind == "bye":
            self.ended.add((sender, session))
            self._drop_conn(sender, f"bye {message.get('reason')}")
        else:
            emit("dropped", why=f"signal type {kind!r}", peer=sender)

    def _drop_conn(self, peer, why):
        conn = self.conns.pop(peer, None)
        if conn is not None:
            conn.close()
            emit("closed", peer=peer, why=why)
            self.viewers_changed()

    def keyframe(self):
        event = GstVideo.video_event_new_upstream_force_key_unit(Gst.CLOCK_TIME_NONE, True, 0)
        self.encoder.get_static_pad("src").send_event(event)

    # --- run and stop ---

    def stop(self):
        if self.stopping:
            return False
        # bye first: once our presence is gone viewers drop our signals.
        sent = [self.send(peer, conn.remote_session, {"type": "bye", "reason": "shutdown"}) for peer, conn in self.conns.items()]
        for peer in list(self.conns):
            self._drop_conn(peer, "shutdown")
        self.stopping = True
        sent.append(self.mqtt.publish(self.presence_topic(), b"", qos=1, retain=True))
        sent.append(self.mqtt.publish(self.status_topic(), json.dumps(self.status("offline")), qos=1, retain=True))
        for info in sent:
            info.wait_for_publish(2)
        self.mqtt.disconnect()
        self.loop.quit()
        return False

    def warm_up(self):
        """Loads webrtcbin's plugins and makes its DTLS certificate, which one
        process shares and makes on its first offer, before anyone joins: a
        start-up cost, not a join's."""
        webrtc = Gst.ElementFactory.make("webrtcbin")
        caps = Gst.Caps.from_string("application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000")
        webrtc.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY, caps)
        webrtc.set_state(Gst.State.READY)
        promise = Gst.Promise.new()
        webrtc.emit("create-offer", None, promise)
        promise.wait()
        webrtc.set_state(Gst.State.NULL)

    def run(self):
        self.warm_up()
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_error)
        self.pipeline.set_state(Gst.State.PLAYING)
        for signum in (2, 15):  # SIGINT, SIGTERM
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, self.stop)
        self.mqtt.connect_async(self.broker_host, self.broker_port, keepalive=10)
        self.mqtt.loop_start()
        self.loop.run()
        self.mqtt.loop_stop()
        self.pipeline.set_state(Gst.State.NULL)

    def _on_error(self, _bus, message):
        error, debug = message.parse_error()
        emit("error", message=f"{error.message} ({debug})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--id", default="cam1")
    parser.add_argument("--max-viewers", type=int, default=8)
    parser.add_argument("--prefix", default="meshcam")
    args = parser.parse_args()
    Gst.init(None)
    for element in ("webrtcbin", "videotestsrc", "x264enc", "rtph264pay", "nicesrc"):
        if Gst.ElementFactory.find(element) is None:
            raise SystemExit(
                f"GStreamer element {element} missing (gstreamer1.0-plugins-bad, "
                "gstreamer1.0-plugins-ugly, gstreamer1.0-nice)"
            )
    Camera(args).run()


if __name__ == "__main__":
    main()
