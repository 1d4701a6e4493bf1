"""What every script peer of PROTOCOL.md shares that needs no GStreamer:
the JSON event lines on stdout, version 1 payloads, the room's topics, and
the frame clock behind the `frame` and `mark` events the tests read.

The routing of inbound topics and the checks of presences and signals are
here too. Imported by tests/interop/protocol_peer.py (the peers on webrtcbin, under
Debian's python3 with GObject introspection) and by
tests/interop/aiortc_viewer.py (aiortc's own Python environment, which has
no GObject introspection).
"""

import json
import sys
import threading
import time

MAX_PAYLOAD = 64 * 1024
FRAME_REPORT_EVERY = 30
STARTED = time.monotonic()

_print_lock = threading.Lock()


def emit(event, **fields):
    fields = {"event": event, **fields}
    with _print_lock:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def parse(payload):
    """A version 1 JSON object, or None."""
    if len(payload) > MAX_PAYLOAD:
        return None
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(value, dict) or value.get("v") != 1:
        return None
    return value


def presence_topic(prefix, room, peer):
    return f"{prefix}/rooms/{room}/peers/{peer}"


def signal_topic(prefix, room, to, sender):
    return f"{prefix}/rooms/{room}/signal/{to}/{sender}"


def join(client, rc, prefix, room, own_id):
    """On paho's connect: presences and our inbox in one subscribe, whose
    SUBACK (its message id, returned) says the presence may go out; None
    when the broker refused the connection (said as an error event)."""
    if rc != 0:
        emit("error", message=f"broker refused the connection: {rc}")
        return None
    _, mid = client.subscribe(
        [(presence_topic(prefix, room, "+"), 1), (signal_topic(prefix, room, own_id, "+"), 1)]
    )
    return mid


def route(prefix, room, own_id, topic):
    """What an inbound topic is: ("presence", peer), ("signal", sender) for
    our inbox, ("status", device), or None."""
    levels = topic.split("/")
    base = prefix.split("/")
    if levels[: len(base)] != base:
        return None
    rest = levels[len(base) :]
    if len(rest) == 4 and rest[:3] == ["rooms", room, "peers"]:
        return ("presence", rest[3])
    if len(rest) == 5 and rest[:3] == ["rooms", room, "signal"] and rest[3] == own_id:
        return ("signal", rest[4])
    if len(rest) == 3 and rest[0] == "devices" and rest[2] == "status":
        return ("status", rest[1])
    return None


def checked_presence(peer, payload):
    """A peer's presence from a non-empty retained payload, or None (said
    as dropped) when it is not one of that peer."""
    presence = parse(payload)
    if presence is None or presence.get("id") != peer or not presence.get("session"):
        emit("dropped", why="bad presence", peer=peer)
        return None
    return presence


def checked_signal(sender, payload, peers, own_session):
    """(message, the sender's presence) for a signal of the sender's current
    session to ours, or None (said as dropped)."""
    message = parse(payload)
    if message is None:
        emit("dropped", why="unparsable signal", peer=sender)
        return None
    presence = peers.get(sender)
    if presence is None:
        emit("dropped", why="signal from a peer not in the room", peer=sender)
        return None
    if message.get("to_session") != own_session or message.get("session") != presence.get("session"):
        emit("dropped", why="stale session", peer=sender, type=message.get("type"))
        return None
    return message, presence


def seconds():
    """The clock of the `frame` and `mark` events: seconds since start."""
    return round(time.monotonic() - STARTED, 3)


def mark():
    emit("mark", t=seconds())


class FrameClock:
    """One connection's frames: how many, and the longest wait between two
    since its previous `frame` event."""

    def __init__(self, number):
        self.number = number
        self.frames = 0
        self.last_at = None
        self.longest_gap = 0.0

    def tick(self, total):
        """A frame of this connection, the `total`-th of the peer: says so
        on the connection's first frame and on every 30th of the peer."""
        self.frames += 1
        now = time.monotonic()
        if self.last_at is not None:
            self.longest_gap = max(self.longest_gap, now - self.last_at)
        self.last_at = now
        if self.frames == 1 or total % FRAME_REPORT_EVERY == 0:
            emit(
                "frame",
                count=total,
                conn=self.number,
                conn_frames=self.frames,
                gap_ms=round(self.longest_gap * 1000),
                t=seconds(),
            )
            self.longest_gap = 0.0
