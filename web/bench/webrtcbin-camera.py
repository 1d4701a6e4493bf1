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

import json
import os
import sys
import time

# The module the interop viewer shares, in the repository's tests/interop.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "interop"))
sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from protocol_peer import ProtocolPeer, WebrtcbinConnection, argument_parser, run_peer  # noqa: E402
from protocol_peer import create, emit, in_main, session_description  # noqa: E402
from protocol_peer import add_remote_candidate, end_of_candidates, is_mdns, sdp_mids, wire_candidate  # noqa: E402

import gi  # noqa: E402

gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstVideo, GstWebRTC  # noqa: E402

WIDTH, HEIGHT, FPS, BITRATE_KBPS = 640, 360, 30, 800
ENCODE = (
    f"videotestsrc is-live=true ! video/x-raw,width={WIDTH},height={HEIGHT},framerate={FPS}/1"
    f" ! x264enc name=enc tune=zerolatency speed-preset=ultrafast bitrate={BITRATE_KBPS}"
    " key-int-max=60 ! rtph264pay config-interval=-1"
    " ! application/x-rtp,media=video,encoding-name=H264,payload=102"
    " ! tee name=tee allow-not-linked=true"
)
STATUS_DELAY_MS = 50  # status republished at most this often
ELEMENTS = ("webrtcbin", "videotestsrc", "x264enc", "rtph264pay", "nicesrc")
PACKAGES = "gstreamer1.0-plugins-bad, gstreamer1.0-plugins-ugly, gstreamer1.0-nice"  # Debian's, with ELEMENTS


class Connection(WebrtcbinConnection):
    """One webrtcbin offering the video to one viewer session."""

    def __init__(self, camera, peer, remote_session):
        super().__init__(camera, peer, remote_session)
        self.camera = camera
        self.offered = False
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
        create(self.webrtc, "offer", self._on_offer)

    def _on_offer(self, offer):
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
        answer = session_description("answer", sdp)
        if answer is None:
            return
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
            end_of_candidates(self.webrtc, self.mids)
            return
        if is_mdns(text):
            return  # mDNS: not resolved here (see the header)
        add_remote_candidate(self.webrtc, self.mids, cand, text)

    # --- webrtcbin callbacks (main loop) ---

    def _local_candidate(self, mline, candidate):
        self._send_candidate(wire_candidate(mline, candidate, self.mids))

    def _send_candidate(self, candidate):
        """Sends one of our candidates (None: end of candidates) once the
        answer is applied, as PROTOCOL.md has the offerer do."""
        if not self.current():
            return
        if not self.answered:
            self.held.append(candidate)
            return
        self.camera.send(self.peer, self.remote_session, {"type": "candidate", "candidate": candidate})

    def _state(self, _name, nick):
        emit("state", peer=self.peer, connection=nick)
        if nick == "connected":
            self.camera.keyframe()


class Camera(ProtocolPeer):
    def __init__(self, args):
        super().__init__(args)
        self.max_viewers = args.max_viewers
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.conns = {}  # viewer id -> Connection
        self.status_due = False
        self.stopping = False
        self.pipeline = Gst.parse_launch(ENCODE)
        self.tee = self.pipeline.get_by_name("tee")
        self.encoder = self.pipeline.get_by_name("enc")

    # --- MQTT (paho's thread) ---

    def _connected(self, _client):
        in_main(self.publish_status)

    # --- status and presence (main loop) ---

    def _announce(self):
        if self.stopping:
            return
        self.publish_presence("camera", name=self.id)
        emit("ready", id=self.id, session=self.session)

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
        if not self.stopping:
            super()._handle(topic, payload)

    def _peer_left(self, peer, _old):
        self._drop_conn(peer, "presence cleared")

    def _peer_seen(self, peer, presence, _old):
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

    def _on_signal(self, sender, session, _presence, message):
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
        sent.append(self.clear_presence())
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
        self.connect()
        self.loop.run()
        self.mqtt.loop_stop()
        self.pipeline.set_state(Gst.State.NULL)

    def _on_error(self, _bus, message):
        error, debug = message.parse_error()
        emit("error", message=f"{error.message} ({debug})")


def main():
    parser = argument_parser(__doc__.splitlines()[0], "cam1")
    parser.add_argument("--max-viewers", type=int, default=8)
    run_peer(Camera, parser, ELEMENTS, PACKAGES)


if __name__ == "__main__":
    main()
