"""A meshcam viewer on aiortc (PyPI), written from PROTOCOL.md alone.

It is neither meshcam's WebRTC stack nor GStreamer's: ICE is aioice, DTLS
pyOpenSSL, RTP aiortc's own receiver, which sends receiver reports, NACKs,
PLIs and REMB (its own delay-based estimate) and no transport-wide
feedback, at its default settings. It joins a room as a viewer, answers
each camera's offers (its candidates inside the answer: aiortc does not
trickle), takes the camera's trickled candidates, decodes the video and
says what happens as the JSON lines of tests/interop/webrtcbin_viewer.py:

    {"event":"joined","id":...,"session":...}
    {"event":"offer","peer":...,"conn":N,"restart":false}
    {"event":"state","peer":...,"conn":N,"ice":...}
    {"event":"frame","count":N,"conn":K,"conn_frames":M,"gap_ms":G,"t":T}
                 on a connection's first frame and every 30th
    {"event":"closed","peer":...,"conn":N}
    {"event":"mark","t":T}    answer to the command `mark` on stdin
    {"event":"dropped","why":...} / {"event":"error","message":...}

Commands on stdin: `mark`, `quit` (also at end of input).

Needs aiortc and paho-mqtt (pip install aiortc paho-mqtt; scripts/setup test
puts them in /opt/meshcam-aiortc).

Usage: aiortc_viewer.py --broker mqtt://HOST:PORT --room R --id ID [--prefix meshcam]
"""

import argparse
import asyncio
import json
import secrets
import sys
from urllib.parse import urlparse

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
import paho.mqtt.client as mqtt  # noqa: E402
from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.sdp import candidate_from_sdp  # noqa: E402
from protocol_wire import FrameClock, checked_presence, checked_signal, emit, mark  # noqa: E402
from protocol_wire import join, presence_topic, route, signal_topic  # noqa: E402


class Connection:
    """One RTCPeerConnection answering one camera session."""

    def __init__(self, viewer, peer, session, number):
        self.viewer = viewer
        self.peer = peer
        self.session = session
        self.number = number
        self.pc = RTCPeerConnection()
        self.clock = FrameClock(number)
        self.closed = False
        self.pc.on("track", self._on_track)
        self.pc.on("iceconnectionstatechange", self._on_ice_state)

    def _on_ice_state(self):
        emit("state", peer=self.peer, conn=self.number, ice=self.pc.iceConnectionState)

    def _on_track(self, track):
        if track.kind == "video":
            asyncio.ensure_future(self._consume(track))

    async def _consume(self, track):
        while not self.closed:
            try:
                await track.recv()
            except Exception:  # the track ended with its connection
                return
            self.viewer.count_frame(self)

    async def answer(self, sdp):
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self.viewer.send(self.peer, self.session, {"type": "answer", "sdp": self.pc.localDescription.sdp})
        # Our candidates were in the answer.
        self.viewer.send(self.peer, self.session, {"type": "candidate", "candidate": None})

    async def add_candidate(self, cand):
        if cand is None:
            return
        text = cand.get("candidate") if isinstance(cand, dict) else None
        if not isinstance(text, str) or not text:
            return
        if ".local" in text:
            emit("dropped", why="mDNS candidate", candidate=text)
            return
        candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
        candidate.sdpMid = cand.get("sdpMid")
        candidate.sdpMLineIndex = cand.get("sdpMLineIndex")
        await self.pc.addIceCandidate(candidate)

    async def close(self):
        self.closed = True
        await self.pc.close()


class Viewer:
    def __init__(self, args, loop):
        self.args = args
        self.loop = loop
        self.prefix = args.prefix
        self.room = args.room
        self.id = args.id
        self.session = secrets.token_urlsafe(12)
        self.peers = {}  # id -> presence
        self.conns = {}  # peer id -> Connection
        self.queued = {}  # peer id -> candidates before the connection
        self.conn_count = 0
        self.frames = 0
        self.joined = False
        url = urlparse(args.broker)
        self.mqtt = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION1, client_id=self.id, clean_session=True, protocol=mqtt.MQTTv311
        )
        self.mqtt.will_set(self.presence_topic(), payload=b"", qos=1, retain=True)
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.on_message = self._on_message
        self.join_mid = None
        self.mqtt.connect_async(url.hostname or "127.0.0.1", url.port or 1883, keepalive=10)
        self.mqtt.loop_start()

    def presence_topic(self, peer=None):
        return presence_topic(self.prefix, self.room, peer or self.id)

    def signal_topic(self, to, sender):
        return signal_topic(self.prefix, self.room, to, sender)

    # --- paho's thread: hand everything to the asyncio loop ---

    def _on_connect(self, client, _userdata, _flags, rc):
        self.join_mid = join(client, rc, self.prefix, self.room, self.id)

    def _on_subscribe(self, _client, _userdata, mid, _granted):
        if mid == self.join_mid:
            self.loop.call_soon_threadsafe(self._announce)

    def _on_message(self, _client, _userdata, msg):
        self.loop.call_soon_threadsafe(self._handle, msg.topic, bytes(msg.payload))

    # --- the asyncio loop ---

    def _announce(self):
        presence = {"v": 1, "id": self.id, "session": self.session, "role": "viewer"}
        self.mqtt.publish(self.presence_topic(), json.dumps(presence), qos=1, retain=True)
        if not self.joined:
            self.joined = True
            emit("joined", id=self.id, session=self.session)

    def send(self, to, to_session, message):
        message = {"v": 1, "session": self.session, "to_session": to_session, **message}
        self.mqtt.publish(self.signal_topic(to, self.id), json.dumps(message), qos=1)

    def _handle(self, topic, payload):
        routed = route(self.prefix, self.room, self.id, topic)
        if routed is not None and routed[0] == "presence":
            self._presence(routed[1], payload)
        elif routed is not None and routed[0] == "signal":
            self._signal(routed[1], payload)

    def _presence(self, peer, payload):
        if peer == self.id:
            return
        if not payload:
            self.peers.pop(peer, None)
            self._drop(peer)
            return
        presence = checked_presence(peer, payload)
        if presence is None:
            return
        old = self.peers.get(peer)
        self.peers[peer] = presence
        conn = self.conns.get(peer)
        if old is not None and conn is not None and conn.session != presence["session"]:
            self._drop(peer)

    def _signal(self, sender, payload):
        checked = checked_signal(sender, payload, self.peers, self.session)
        if checked is None:
            return
        message, presence = checked
        session = message["session"]
        kind = message.get("type")
        if kind == "offer" and presence.get("role") == "camera" and isinstance(message.get("sdp"), str):
            self._drop(sender)
            self.conn_count += 1
            conn = Connection(self, sender, session, self.conn_count)
            self.conns[sender] = conn
            emit("offer", peer=sender, conn=conn.number, restart=False)
            asyncio.ensure_future(self._answer(conn, message["sdp"]))
        elif kind == "candidate":
            conn = self.conns.get(sender)
            if conn is None:
                self.queued.setdefault(sender, []).append(message.get("candidate"))
            else:
                asyncio.ensure_future(self._guarded(conn.add_candidate(message.get("candidate"))))
        elif kind == "bye":
            self._drop(sender)
        else:
            emit("dropped", why=f"signal type {kind!r}", peer=sender)

    async def _answer(self, conn, sdp):
        await self._guarded(conn.answer(sdp))
        for cand in self.queued.pop(conn.peer, []):
            await self._guarded(conn.add_candidate(cand))

    async def _guarded(self, work):
        try:
            await work
        except Exception as e:  # say what broke, keep the viewer
            emit("error", message=f"{type(e).__name__}: {e}")

    def _drop(self, peer):
        conn = self.conns.pop(peer, None)
        self.queued.pop(peer, None)
        if conn is not None:
            emit("closed", peer=peer, conn=conn.number)
            asyncio.ensure_future(conn.close())

    def count_frame(self, conn):
        self.frames += 1
        conn.clock.tick(self.frames)

    async def quit(self):
        for peer, conn in list(self.conns.items()):
            self.send(peer, conn.session, {"type": "bye", "reason": "leaving"})
            await conn.close()
        self.mqtt.publish(self.presence_topic(), b"", qos=1, retain=True).wait_for_publish(5)
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--id", default=f"aiortc-{secrets.token_hex(4)}")
    parser.add_argument("--prefix", default="meshcam")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    viewer = Viewer(args, loop)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        word = line.decode().strip()
        if not line or word == "quit":
            break
        if word == "mark":
            mark()
        elif word:
            emit("error", message=f"unknown command {word!r}")
    await viewer.quit()


if __name__ == "__main__":
    asyncio.run(main())
