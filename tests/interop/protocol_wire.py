"""What every script peer of PROTOCOL.md shares that needs no GStreamer:
the JSON event lines on stdout, version 1 payloads, the room's topics, and
the frame clock behind the `frame` and `mark` events the tests read.

Imported by tests/interop/protocol_peer.py (the peers on webrtcbin, under
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
