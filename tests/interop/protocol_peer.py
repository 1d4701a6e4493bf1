"""PROTOCOL.md's signaling over MQTT for the peers on GStreamer's webrtcbin.

Shared by tests/interop/webrtcbin_viewer.py (a viewer) and
web/bench/webrtcbin-camera.py (a camera). This module owns what the two
have in common:

- running work on the GLib main loop (in_main); the JSON event lines
  (emit), payloads (parse) and topics come from protocol_wire.py, which
  needs no GStreamer;
- the MQTT client: the broker URL, paho 1.x or 2.x, the will (our empty
  retained presence), connecting, and the one subscribe to presences and
  our inbox after which our presence is published;
- the topics (presence, signal, device status) and the routing of an
  inbound message to presence, signal or status;
- presences checked against their topic, signals sent with our session and
  the recipient's, and taken only when both sessions are current;
- the candidate object on the wire, mDNS candidates, SDP mids, the SDP
  and promise handling around webrtcbin's offers and answers, and a
  connection's glue to webrtcbin's signals (WebrtcbinConnection: its
  candidates and states on the main loop, end of candidates sent once
  gathering is complete);
- the options both have (--broker, --room, --id, --prefix) and the check
  for the GStreamer elements a script needs (argument_parser, run_peer).

What a peer does with a presence or a signal, its connections and its
media stay in the scripts (the subclass hooks below).
"""

import argparse
import json
import re
import secrets
from urllib.parse import urlparse

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402

from protocol_wire import checked_presence, checked_signal, join, route  # noqa: E402
from protocol_wire import emit, parse, presence_topic, signal_topic  # noqa: E402,F401 (emit, parse: for the scripts)


def in_main(fn, *args):
    """Runs fn(*args) on the GLib main loop (every state change happens there)."""

    def run():
        try:
            fn(*args)
        except Exception as e:  # keep the loop alive, say what broke
            emit("error", message=f"{type(e).__name__}: {e}")
        return False

    GLib.idle_add(run)


def argument_parser(description, default_id):
    """The options every peer has before its own: --broker, --room and
    --id (run_peer adds --prefix after them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--id", default=default_id)
    return parser


def run_peer(peer_class, parser, elements, packages):
    """A script's main: the command line, GStreamer and its elements (or an
    exit naming the Debian packages), then peer_class(args).run()."""
    parser.add_argument("--prefix", default="meshcam")
    args = parser.parse_args()
    Gst.init(None)
    for element in elements:
        if Gst.ElementFactory.find(element) is None:
            raise SystemExit(f"GStreamer element {element} missing ({packages})")
    peer_class(args).run()


# --- SDP and candidates ---


def sdp_mids(sdp):
    """mid of every m-line, in order (None where there is none)."""
    mids = []
    for section in re.split(r"^m=", sdp, flags=re.M)[1:]:
        m = re.search(r"^a=mid:(\S+)", section, re.M)
        mids.append(m.group(1) if m else None)
    return mids


def session_description(kind, sdp):
    """webrtcbin's description of an "offer" or "answer" SDP text, or None
    (and an error line) where it does not parse."""
    _, msg = GstSdp.SDPMessage.new()
    if GstSdp.sdp_message_parse_buffer(sdp.encode(), msg) != GstSdp.SDPResult.OK:
        emit("error", message=f"{kind} SDP does not parse")
        return None
    sdp_type = GstWebRTC.WebRTCSDPType.OFFER if kind == "offer" else GstWebRTC.WebRTCSDPType.ANSWER
    return GstWebRTC.WebRTCSessionDescription.new(sdp_type, msg)


def create(webrtc, kind, on_created):
    """Has webrtcbin create an "offer" or "answer" and calls
    on_created(it) on the streaming thread that gets it; where it fails, an
    error line. It lives in the promise's reply: on_created uses it there,
    before the reply is freed, and hands only its text to the main loop."""

    def on_reply(promise, _):
        reply = promise.get_reply()
        value = reply.get_value(kind) if reply is not None else None
        if value is None:
            error = reply.get_value("error") if reply is not None else None
            in_main(emit, "error", message=f"create-{kind} failed: {error}")
            return
        on_created(value)

    webrtc.emit(f"create-{kind}", None, Gst.Promise.new_with_change_func(on_reply, None))


def wire_candidate(mline, candidate, mids):
    """One of webrtcbin's local candidates as the candidate object on the wire."""
    text = candidate[2:] if candidate.startswith("a=") else candidate
    mid = mids[mline] if mline < len(mids) and mids[mline] else str(mline)
    return {"candidate": text, "sdpMid": mid, "sdpMLineIndex": mline}


def is_mdns(text):
    """Whether a candidate's address is an mDNS (.local) name."""
    parts = text.split()
    return len(parts) > 4 and parts[4].endswith(".local")


def add_remote_candidate(webrtc, mids, cand, text):
    """Hands webrtcbin a remote candidate: its text, at the m-line its
    sdpMLineIndex or sdpMid names."""
    index = cand.get("sdpMLineIndex")
    if not isinstance(index, int):
        mid = cand.get("sdpMid")
        index = mids.index(mid) if mid in mids else 0
    webrtc.emit("add-ice-candidate", index, text)


def end_of_candidates(webrtc, mids):
    for index in range(max(1, len(mids))):
        webrtc.emit("add-ice-candidate", index, None)


class WebrtcbinConnection:
    """One webrtcbin with one remote session. A subclass makes self.webrtc,
    connects its on-ice-candidate and notify:: signals to the two callbacks
    below and has, on the main loop, _local_candidate(mline, candidate)
    (one of webrtcbin's), _send_candidate(candidate) (a wire candidate, or
    None: end of candidates) and _state(name, nick) (a connection state)."""

    def __init__(self, owner, peer, remote_session):
        self.owner = owner
        self.peer = peer
        self.remote_session = remote_session
        self.closed = False
        self.mids = []

    def current(self):
        return not self.closed and self.owner.conns.get(self.peer) is self

    # --- webrtcbin callbacks (streaming threads) ---

    def _on_ice_candidate(self, _webrtc, mline, candidate):
        in_main(self._local_candidate, mline, candidate)

    def _on_notify(self, webrtc, pspec):
        value = webrtc.get_property(pspec.name)
        in_main(self._state_changed, pspec.name, value)

    # --- main loop ---

    def _state_changed(self, name, value):
        if not self.current():
            return
        nick = value.value_nick
        if name == "ice-gathering-state":
            if nick == "complete":
                self._send_candidate(None)
            return
        self._state(name, nick)


class ProtocolPeer:
    """A peer in one room: its session, the presences of the others, the
    sessions ended by a bye, the MQTT client and the GLib main loop.

    A subclass has self.conns (peer id -> connection) and the hooks
    _connected(client) (paho's thread), _announce(), _peer_left(peer, old),
    _peer_seen(peer, presence, old) and _on_signal(sender, session,
    presence, message) (main loop); _status(device, payload) if it
    subscribes to device statuses."""

    def __init__(self, args):
        self.prefix = args.prefix
        self.room = args.room
        self.id = args.id
        self.session = secrets.token_urlsafe(12)
        self.peers = {}  # id -> presence
        self.ended = set()  # (peer, session) that sent or got a bye
        self.loop = GLib.MainLoop()

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

    def connect(self):
        self.mqtt.connect_async(self.broker_host, self.broker_port, keepalive=10)
        self.mqtt.loop_start()

    # --- topics ---

    def presence_topic(self, peer=None):
        return presence_topic(self.prefix, self.room, peer or self.id)

    def signal_topic(self, to, sender):
        return signal_topic(self.prefix, self.room, to, sender)

    def status_topic(self, device=None):
        return f"{self.prefix}/devices/{device or self.id}/status"

    # --- MQTT (paho's thread) ---

    def _on_connect(self, client, _userdata, _flags, rc):
        self.join_mid = join(client, rc, self.prefix, self.room, self.id)
        if self.join_mid is not None:
            self._connected(client)

    def _on_subscribe(self, _client, _userdata, mid, _granted):
        if mid == self.join_mid:
            in_main(self._announce)

    def _on_message(self, _client, _userdata, msg):
        in_main(self._handle, msg.topic, bytes(msg.payload))

    # --- outbound ---

    def publish_presence(self, role, **fields):
        presence = {"v": 1, "id": self.id, "session": self.session, "role": role, **fields}
        self.mqtt.publish(self.presence_topic(), json.dumps(presence), qos=1, retain=True)

    def clear_presence(self):
        return self.mqtt.publish(self.presence_topic(), b"", qos=1, retain=True)

    def send(self, to, to_session, message):
        message = {"v": 1, "session": self.session, "to_session": to_session, **message}
        return self.mqtt.publish(self.signal_topic(to, self.id), json.dumps(message), qos=1)

    # --- inbound (main loop) ---

    def _handle(self, topic, payload):
        routed = route(self.prefix, self.room, self.id, topic)
        if routed is None:
            return
        kind, who = routed
        if kind == "presence":
            self._presence(who, payload)
        elif kind == "signal":
            self._signal(who, payload)
        else:
            self._status(who, payload)

    def _presence(self, peer, payload):
        if peer == self.id:
            return
        if not payload:
            self._peer_left(peer, self.peers.pop(peer, None))
            return
        presence = checked_presence(peer, payload)
        if presence is None:
            return
        old = self.peers.get(peer)
        self.peers[peer] = presence
        self._peer_seen(peer, presence, old)

    def _signal(self, sender, payload):
        checked = checked_signal(sender, payload, self.peers, self.session)
        if checked is not None:
            message, presence = checked
            self._on_signal(sender, message["session"], presence, message)

    def _status(self, device, payload):
        pass
