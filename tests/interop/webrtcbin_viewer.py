#!/usr/bin/python3
"""A meshcam viewer on GStreamer's webrtcbin, written from PROTOCOL.md alone.

It is not meshcam's own WebRTC stack (webrtc-rs): ICE is libnice, DTLS is
OpenSSL, RTP is GStreamer's rtpbin. It joins a room as a viewer, answers the
offers of the cameras in it (ICE restarts in the same session too), trickles
candidates both ways, decodes the H.264 it receives with avdec_h264 and says
what happens as JSON lines on stdout:

    {"event":"joined","id":...,"session":...}      presence published
    {"event":"offer","peer":...,"conn":N,"restart":bool,"ice_servers":N}
                 N ICE servers given in the offer; the viewer uses the
                 first stun: and UDP turn: of them unless --stun, --turn
    {"event":"state","peer":...,"conn":N,"ice":"connected"}
    {"event":"frame","count":N,"conn":K,"conn_frames":M,"gap_ms":G,"t":T}
                 decoded frames, all connections together (count) and of
                 connection K (conn_frames); on a connection's first frame
                 and on every 30th frame; gap_ms is the longest wait between
                 two frames of connection K since its previous frame event,
                 T the seconds since the viewer started
    {"event":"heard","peer":...,"conn":N,"rms_db":L}
                 with --hear, the level of the camera's sound every 500 ms
                 (dBFS, the loudest channel; -120 for silence)
    {"event":"bye","peer":...,"reason":...}        a bye from a camera
    {"event":"peer","peer":...,"role":...,"session":...}  a presence
    {"event":"peer_left","peer":...}
    {"event":"left"} / {"event":"replaced","conn_closed":N}
    {"event":"dropped","why":...}                  a signal we did not use
    {"event":"error","message":...}

Commands, one per line on stdin:

    leave    bye to every camera, then clear the presence
    replace  drop every connection silently (no bye, presence and session
             unchanged, as a browser tab that crashed and was restored in
             place), and answer the next offer from a fresh webrtcbin: a new
             DTLS certificate and new ICE credentials
    mark     print {"event":"mark","t":T} on the clock of the frame events
    talk     ask every camera for the floor (PROTOCOL.md, "Talking back");
             once granted, a tone of --talk-hz goes out on the camera's
             sound m-line (needs --talker: its answers are sendrecv)
    release  give the floor back (the tone stops)
    hush     keep the floor, but send silence instead of the tone
    quit     leave and exit (also at end of input)

Usage: webrtcbin_viewer.py --broker mqtt://HOST:PORT --room R --id ID
       [--bind ADDR] [--stun stun://HOST:PORT] [--turn turn://USER:PASS@HOST:PORT]
       [--no-decode] [--prefix meshcam]

With --no-decode a frame is an access unit out of the depayloader, not a
decoded picture: many receivers fit on a small machine, and what is
measured is the network's delivery, not the decoder's pace.

mDNS: libnice gathers no .local candidates, and remote .local candidates
are dropped rather than resolved (no multicast is needed on any network).
With --bind, only host candidates on that address are sent (server
reflexive and relay ones always are). --stun and --turn are webrtcbin's
own stun-server and turn-server.

A viewer that is not a camera is not connected to (a receive-only viewer
has nothing to offer another viewer); its presence is only recorded.
"""

import base64
import hashlib
import re
import secrets
import subprocess
import sys
import threading
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from protocol_peer import ProtocolPeer, WebrtcbinConnection, argument_parser, run_peer  # noqa: E402
from protocol_peer import create, emit, in_main, parse, session_description  # noqa: E402
from protocol_peer import add_remote_candidate, end_of_candidates, is_mdns, sdp_mids, wire_candidate  # noqa: E402
from protocol_wire import FrameClock, mark  # noqa: E402

import gi  # noqa: E402
from gi.repository import Gst, GstWebRTC  # noqa: E402

try:
    gi.require_version("Nice", "0.1")
    from gi.repository import Nice  # noqa: E402
except (ValueError, ImportError):
    Nice = None

ELEMENTS = (
    "webrtcbin", "rtph264depay", "h264parse", "avdec_h264", "nicesrc", "opusenc", "rtpopuspay",
)
PACKAGES = "gstreamer1.0-plugins-bad, gstreamer1.0-nice, gstreamer1.0-libav"  # Debian's, with ELEMENTS

_KEEP_ALIVE = []


def sdp_fingerprint(sdp):
    m = re.search(r"^a=fingerprint:(\S+ \S+)", sdp, re.M)
    return m.group(1).upper() if m else None


def sdp_origin_session(sdp):
    """The session id of the o= line: a new PeerConnection has a new one,
    a renegotiation of the same one keeps it (RFC 3264 §8)."""
    m = re.search(r"^o=\S+ (\S+) ", sdp, re.M)
    return m.group(1) if m else None


def sdp_ice_ufrags(sdp):
    return re.findall(r"^a=ice-ufrag:(\S+)", sdp, re.M)


def new_certificate():
    """A fresh self-signed ECDSA P-256 certificate and key, PEM, and the
    certificate's SHA-256 fingerprint as SDP writes it."""
    result = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "-", "-out", "-", "-days", "2", "-subj", "/CN=webrtcbin-viewer",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # The certificate first: webrtcbin takes its fingerprint from the first
    # PEM block.
    blocks = re.findall(r"-----BEGIN [^-]+-----.*?-----END [^-]+-----\n", result.stdout, re.S)
    blocks.sort(key=lambda block: "CERTIFICATE" not in block.splitlines()[0])
    der = base64.b64decode("".join(blocks[0].splitlines()[1:-1]))
    digest = hashlib.sha256(der).hexdigest().upper()
    fingerprint = "sha-256 " + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    return "".join(blocks), fingerprint


def offered_servers(message):
    """The offer's ice_servers (PROTOCOL.md, "ICE servers from the camera")."""
    servers = message.get("ice_servers")
    if not isinstance(servers, list):
        return []
    return [s for s in servers if isinstance(s, dict) and isinstance(s.get("urls"), list)]


def webrtcbin_servers(offered):
    """The first stun: URL and the first UDP turn: URL of `offered`, as
    webrtcbin's stun-server and turn-server properties take them."""
    stun = turn = None
    for server in offered:
        for url in server["urls"]:
            if not isinstance(url, str):
                continue
            if stun is None and url.startswith("stun:"):
                stun = "stun://" + url[len("stun:"):].split("?")[0]
            if turn is None and url.startswith("turn:") and "transport=tcp" not in url:
                user = urllib.parse.quote(str(server.get("username", "")), safe="")
                password = urllib.parse.quote(str(server.get("credential", "")), safe="")
                turn = f"turn://{user}:{password}@" + url[len("turn:"):].split("?")[0]
    return stun, turn


class Connection(WebrtcbinConnection):
    """One webrtcbin answering one camera session."""

    def __init__(self, viewer, peer, remote_session, number, offered):
        super().__init__(viewer, peer, remote_session)
        self.viewer = viewer
        self.number = number
        self.clock = FrameClock(number)
        self.remote_set = False
        self.remote_sdp = None
        self.pending = []  # remote candidates before the description
        self.pipeline = Gst.Pipeline.new(f"conn-{number}")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", f"webrtc-{number}")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.webrtc.set_property("latency", 100)
        # --stun and --turn, else what the camera's offer gave.
        stun, turn = webrtcbin_servers(offered)
        stun = viewer.args.stun or stun
        turn = viewer.args.turn or turn
        if stun:
            self.webrtc.set_property("stun-server", stun)
        if turn:
            self.webrtc.set_property("turn-server", turn)
        self.talk_source = None  # the valve of the tone, with --talker
        self.hush = None  # the volume of the tone, with --talker
        self.pipeline.add(self.webrtc)
        # webrtcbin shares one DTLS certificate across a process; a browser
        # makes one per RTCPeerConnection. Give every connection its own.
        self.certificate, self.fingerprint = new_certificate()
        self.pipeline.connect("deep-element-added", self._on_element_added)
        self.webrtc.connect("on-ice-candidate", self._on_ice_candidate)
        self.webrtc.connect("pad-added", self._on_pad_added)
        for prop in ("ice-connection-state", "connection-state", "ice-gathering-state"):
            self.webrtc.connect(f"notify::{prop}", self._on_notify)
        if viewer.bind and Nice is not None:
            address = Nice.Address.new()
            if address.set_from_string(viewer.bind):
                # The property getters hand Python one reference too few:
                # keep the wrappers for the life of the process.
                ice = self.webrtc.get_property("ice-agent")
                agent = ice.get_property("agent")
                _KEEP_ALIVE.extend([ice, agent])
                agent.add_local_address(address)
        self.pipeline.set_state(Gst.State.PLAYING)

    def _on_element_added(self, _bin, _sub_bin, element):
        factory = element.get_factory()
        if factory is not None and factory.get_name() == "dtlssrtpdec":
            # Before the encoder side takes the DTLS connection (at READY):
            # GStreamer 1.22 keeps the connection made with the old key when
            # only the pem changes, so make it anew under the same id.
            element.set_property("pem", self.certificate)
            element.set_property("connection-id", element.get_property("connection-id"))

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.pipeline.set_state(Gst.State.NULL)

    # --- negotiation (main loop) ---

    def take_offer(self, sdp, restart):
        self.remote_sdp = sdp
        self.mids = sdp_mids(sdp)
        offer = session_description("offer", sdp)
        if offer is None:
            return
        if not restart and self.viewer.args.talker:
            # The sink pad's transceiver must be the only one made before
            # the offer: webrtcbin would give it a transceiver of no kind
            # made here, and abort ("_connect_input_stream: assertion
            # failed: (trans->stream)").
            self.prepare_talk(sdp)
        elif not restart:
            # A receive-only video transceiver for the camera's video.
            self.webrtc.emit(
                "add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, None
            )
        self.remote_set = False
        promise = Gst.Promise.new_with_change_func(self._on_remote_set, None)
        self.webrtc.emit("set-remote-description", offer, promise)

    def _on_remote_set(self, promise, _):
        in_main(self._after_remote_set)

    def _after_remote_set(self):
        if not self.current():
            return
        self.remote_set = True
        pending, self.pending = self.pending, []
        for cand in pending:
            self.add_candidate(cand)
        create(self.webrtc, "answer", self._on_answer)

    def _on_answer(self, answer):
        text = answer.sdp.as_text()
        self.webrtc.emit("set-local-description", answer, Gst.Promise.new())
        # GStreamer 1.22 hashes every base64 line of the pem, the key's too,
        # into the fingerprint it writes: put the certificate's own there.
        text = re.sub(
            r"^a=fingerprint:[^\r\n]*", f"a=fingerprint:{self.fingerprint}", text, flags=re.M
        )
        in_main(self._send_answer, text)

    def _send_answer(self, text):
        if not self.current():
            return
        self.viewer.send(self.peer, self.remote_session, {"type": "answer", "sdp": text})
        emit(
            "answer",
            peer=self.peer,
            conn=self.number,
            fingerprint=sdp_fingerprint(text),
            ufrag=(sdp_ice_ufrags(text) or [None])[0],
            directions=re.findall(r"^a=(sendrecv|recvonly|sendonly|inactive)", text, re.M),
            ssrcs=sorted(set(re.findall(r"^a=ssrc:(\d+)", text, re.M))),
            extmaps=re.findall(r"^a=extmap:\S+ (\S+)", text, re.M),
        )

    def add_candidate(self, cand):
        """A remote candidate object from the wire, or None (end of candidates)."""
        if not self.remote_set:
            self.pending.append(cand)
            return
        if cand is None:
            end_of_candidates(self.webrtc, self.mids)
            return
        text = cand.get("candidate")
        if not isinstance(text, str):
            emit("dropped", why="candidate without text")
            return
        if text == "":
            end_of_candidates(self.webrtc, self.mids)
            return
        if is_mdns(text):
            emit("dropped", why="mDNS candidate", candidate=text)
            return
        add_remote_candidate(self.webrtc, self.mids, cand, text)

    # --- talking back (main loop) ---

    def prepare_talk(self, sdp):
        """A tone for the camera's sound m-line, held back by a valve, set
        up before the camera's first offer is applied: the answer is then
        sendrecv. GStreamer 1.22's webrtcbin cannot turn a recvonly
        transceiver sendrecv on a later offer ("transceiver direction
        changes are not implemented"), so a webrtcbin that may talk says so
        from the start. A sink pad asked for with sound's caps makes the
        transceiver that the offer's sound m-line then takes."""
        sections = re.split(r"^(?=m=)", sdp, flags=re.M)[1:]
        audio = next((m for m in sections if m.startswith("m=audio")), None)
        if audio is None:
            return
        match = re.search(r"^a=rtpmap:(\d+) opus/48000", audio, re.M | re.I)
        pt = int(match.group(1)) if match else 111
        # The SSRC goes into the caps, so that webrtcbin writes it into the
        # answer: the camera bundles sound and video, and places a stream
        # by the SSRCs the answer declares.
        ssrc = secrets.randbits(32)
        caps = (
            f"application/x-rtp,media=audio,encoding-name=OPUS,payload={pt},"
            f"clock-rate=48000,ssrc=(uint){ssrc}"
        )
        hz = self.viewer.args.talk_hz
        source = Gst.parse_bin_from_description(
            f"audiotestsrc is-live=true wave=sine freq={hz} volume=0.5 ! "
            "volume name=hush ! valve name=talk drop=true ! audioconvert ! audioresample ! opusenc ! "
            f"rtpopuspay pt={pt} ssrc={ssrc} ! capsfilter caps={caps}",
            True,
        )
        self.pipeline.add(source)
        template = self.webrtc.get_pad_template("sink_%u")
        sink = self.webrtc.request_pad(template, None, Gst.Caps.from_string(caps))
        source.get_static_pad("src").link(sink)
        source.sync_state_with_parent()
        self.talk_source = source.get_by_name("talk")
        self.hush = source.get_by_name("hush")

    def talk(self, on):
        """Lets the tone through (granted) or holds it back."""
        if self.talk_source is None:
            emit("error", message="this viewer was not started with --talker")
            return
        self.talk_source.set_property("drop", not on)

    def silence(self):
        """Sends silence instead of the tone: packets go on (no DTX)."""
        if self.talk_source is not None:
            self.hush.set_property("mute", True)

    # --- webrtcbin callbacks (main loop) ---

    def _local_candidate(self, mline, candidate):
        if not self.current():
            return
        if self.viewer.bind:
            parts = candidate.split()
            host = len(parts) > 7 and parts[7] == "host"
            if host and parts[4] != self.viewer.bind:
                return
        self._send_candidate(wire_candidate(mline, candidate, self.mids))

    def _send_candidate(self, candidate):
        self.viewer.send(
            self.peer, self.remote_session, {"type": "candidate", "candidate": candidate}
        )

    def _state(self, name, nick):
        key = "ice" if name == "ice-connection-state" else "connection"
        emit("state", peer=self.peer, conn=self.number, **{key: nick})

    def _on_pad_added(self, _webrtc, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        s = caps.get_structure(0)
        encoding = s.get_string("encoding-name") or ""
        if s.get_string("media") == "video" and encoding.upper() == "H264":
            if self.viewer.decode:
                chain = "queue ! rtph264depay ! h264parse ! avdec_h264 name=dec ! fakesink sync=false"
            else:
                chain = "queue ! rtph264depay name=dec ! fakesink sync=false"
        elif s.get_string("media") == "audio" and self.viewer.args.hear:
            # What the camera's microphone sends, as a level every 500 ms.
            chain = (
                "queue ! rtpopusdepay ! opusdec ! audioconvert ! "
                "level interval=500000000 post-messages=true ! fakesink sync=false"
            )
            bus = self.pipeline.get_bus()
            bus.add_signal_watch()
            bus.connect("message::element", self._on_level)
        else:
            chain = "fakesink sync=false"
        bin_ = Gst.parse_bin_from_description(chain, True)
        self.pipeline.add(bin_)
        bin_.sync_state_with_parent()
        pad.link(bin_.get_static_pad("sink"))
        dec = bin_.get_by_name("dec")
        if dec is not None:
            dec.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_frame)

    def _on_level(self, _bus, message):
        s = message.get_structure()
        if s is None or s.get_name() != "level" or self.closed:
            return
        # Silence is -inf dB, which JSON cannot say: -120 is far below any
        # sound.
        level = max(-120.0, max(s.get_value("rms")))
        emit("heard", peer=self.peer, conn=self.number, rms_db=round(level, 1))

    def _on_frame(self, _pad, _info):
        self.viewer.count_frame(self)
        return Gst.PadProbeReturn.OK


class Viewer(ProtocolPeer):
    def __init__(self, args):
        super().__init__(args)
        self.args = args
        self.bind = args.bind
        self.decode = not args.no_decode
        self.status = {}  # camera id -> last status state
        self.conns = {}  # peer id -> Connection
        self.queued = {}  # peer id -> candidates that came before any offer
        self.fresh_next = set()  # peers whose next offer gets a fresh webrtcbin
        self.conn_count = 0
        self.frames = 0
        self.frames_lock = threading.Lock()
        self.joined = False
        self.left = False

    # --- MQTT (paho's thread) ---

    def _connected(self, client):
        for device in list(self.status):
            client.subscribe(self.status_topic(device), 1)

    # --- inbound (main loop) ---

    def _announce(self):
        if self.left:
            return
        self.publish_presence("viewer")
        if not self.joined:
            self.joined = True
            emit("joined", id=self.id, session=self.session)

    def _peer_left(self, peer, old):
        if old is not None:
            emit("peer_left", peer=peer)
        self._drop_conn(peer)

    def _peer_seen(self, peer, presence, old):
        if old is None or old.get("session") != presence.get("session"):
            emit("peer", peer=peer, role=presence.get("role"), session=presence["session"])
            conn = self.conns.get(peer)
            if conn is not None and conn.remote_session != presence["session"]:
                # A rejoined peer: its old connection is gone; it offers anew.
                self._drop_conn(peer)
            if presence.get("role") == "camera" and peer not in self.status:
                self.status[peer] = None
                self.mqtt.subscribe(self.status_topic(peer), 1)

    def _status(self, device, payload):
        status = parse(payload) if payload else None
        if status is None or status.get("id") != device:
            return
        self.status[device] = status.get("state")
        if status.get("state") == "offline":
            conn = self.conns.get(device)
            ice = conn.webrtc.get_property("ice-connection-state").value_nick if conn else None
            # Media is peer to peer: a connection whose ICE is up is kept.
            if conn is not None and ice not in ("connected", "completed"):
                self._drop_conn(device)

    def _on_signal(self, sender, session, presence, message):
        if (sender, session) in self.ended:
            emit("dropped", why="session ended by bye", peer=sender)
            return
        kind = message.get("type")
        if kind == "offer":
            self._offer(sender, session, presence, message)
        elif kind == "candidate":
            self._candidate(sender, session, message)
        elif kind == "talk":
            self._talk(sender, message)
        elif kind == "bye":
            self.ended.add((sender, session))
            emit("bye", peer=sender, reason=message.get("reason"))
            self._drop_conn(sender)
        else:
            emit("dropped", why=f"signal type {kind!r}", peer=sender)

    def _offer(self, sender, session, presence, message):
        sdp = message.get("sdp")
        if not isinstance(sdp, str):
            emit("dropped", why="offer without sdp", peer=sender)
            return
        if presence.get("role") != "camera":
            emit("dropped", why="offer from a viewer", peer=sender)
            return
        conn = self.conns.get(sender)
        restart = (
            conn is not None
            and sender not in self.fresh_next
            and conn.remote_session == session
            and conn.remote_sdp is not None
            and sdp_origin_session(conn.remote_sdp) == sdp_origin_session(sdp)
            and sdp_fingerprint(conn.remote_sdp) == sdp_fingerprint(sdp)
        )
        if not restart:
            # A first offer, or one from a new PeerConnection of the camera.
            self._drop_conn(sender)
            self.fresh_next.discard(sender)
            self.conn_count += 1
            conn = Connection(self, sender, session, self.conn_count, offered_servers(message))
            self.conns[sender] = conn
            for cand in self.queued.pop(sender, []):
                conn.add_candidate(cand)
        emit(
            "offer",
            peer=sender,
            conn=conn.number,
            restart=restart,
            ufrag=(sdp_ice_ufrags(sdp) or [None])[0],
            ice_servers=len(offered_servers(message)),
        )
        conn.take_offer(sdp, restart)

    def _talk(self, sender, message):
        action = message.get("action")
        emit(
            "talk",
            peer=sender,
            action=action,
            reason=message.get("reason"),
            holder=message.get("holder"),
        )
        conn = self.conns.get(sender)
        if conn is None:
            return
        if action == "granted":
            conn.talk(True)
        elif action in ("ended", "refused"):
            conn.talk(False)

    def _candidate(self, sender, session, message):
        if "candidate" not in message:
            emit("dropped", why="candidate message without candidate", peer=sender)
            return
        cand = message["candidate"]
        if cand is not None and not isinstance(cand, dict):
            emit("dropped", why="candidate is not an object", peer=sender)
            return
        conn = self.conns.get(sender)
        if conn is None or sender in self.fresh_next:
            self.queued.setdefault(sender, []).append(cand)
        else:
            conn.add_candidate(cand)

    def _drop_conn(self, peer):
        conn = self.conns.pop(peer, None)
        self.queued.pop(peer, None)
        if conn is not None:
            conn.close()
            emit("closed", peer=peer, conn=conn.number)

    def count_frame(self, conn):
        with self.frames_lock:
            if conn.closed:
                return
            self.frames += 1
            conn.clock.tick(self.frames)

    # --- commands (main loop) ---

    def command(self, line):
        word = line.strip()
        if word == "leave":
            self.leave()
        elif word == "replace":
            self.replace()
        elif word == "mark":
            mark()
        elif word in ("talk", "release"):
            action = "request" if word == "talk" else "release"
            for peer, conn in self.conns.items():
                self.send(peer, conn.remote_session, {"type": "talk", "action": action})
                if word == "release":
                    conn.talk(False)
        elif word == "hush":
            for conn in self.conns.values():
                conn.silence()
        elif word == "quit":
            self.quit()
        elif word:
            emit("error", message=f"unknown command {word!r}")

    def leave(self):
        if self.left:
            return
        self.left = True
        # bye first: once our presence is gone the camera drops our signals.
        for peer, conn in list(self.conns.items()):
            self.send(peer, conn.remote_session, {"type": "bye", "reason": "leaving"})
            self.ended.add((peer, conn.remote_session))
        for peer in list(self.conns):
            self._drop_conn(peer)
        self.clear_presence().wait_for_publish(5)
        emit("left")

    def replace(self):
        closed = 0
        for peer in list(self.conns):
            conn = self.conns.pop(peer)
            with self.frames_lock:
                conn.close()
            self.fresh_next.add(peer)
            self.queued.pop(peer, None)
            closed += 1
        emit("replaced", conn_closed=closed)

    def quit(self):
        self.leave()
        self.mqtt.disconnect()
        self.loop.quit()

    def run(self):
        self.connect()

        def read_stdin():
            for line in sys.stdin:
                in_main(self.command, line)
            in_main(self.quit)

        threading.Thread(target=read_stdin, daemon=True).start()
        self.loop.run()
        self.mqtt.loop_stop()


def main():
    parser = argument_parser(__doc__.splitlines()[0], f"wbin-{secrets.token_hex(4)}")
    parser.add_argument("--bind", default=None, help="the only local address for media")
    parser.add_argument("--stun", default=None, help="a STUN server, stun://HOST:PORT")
    parser.add_argument("--turn", default=None, help="a TURN server, turn://USER:PASS@HOST:PORT")
    parser.add_argument(
        "--talker", action="store_true", help="answer the camera's sound sendrecv, to talk later"
    )
    parser.add_argument("--talk-hz", type=int, default=660, help="the pitch of the talk tone")
    parser.add_argument(
        "--hear", action="store_true", help="decode the camera's sound and report its level"
    )
    parser.add_argument(
        "--no-decode", action="store_true", help="count access units instead of decoded pictures"
    )
    run_peer(Viewer, parser, ELEMENTS, PACKAGES)


if __name__ == "__main__":
    main()
