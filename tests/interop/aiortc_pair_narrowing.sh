#!/usr/bin/env bash
# The narrowing of tests/narrowing.rs with aiortc on both ends: does another
# sender keep an aiortc receiver's picture where meshcam cannot? An aiortc
# sender (tests/interop/aiortc_pair.py) in one network namespace, an aiortc
# receiver in another, a veth pair between them. After the receiver has
# played for 15 s (the sender's REMB-driven rate has climbed to its top,
# 1.5 Mbit/s), the sender's side of the link is shaped to 500 kbit/s (`tbf`,
# 16 kB burst, 100 ms of queue) for 40 s, then freed (its rate raised to
# 10 Gbit/s, as tests/narrowing.rs does). Prints the receiver's longest gap
# between frames from 2 s after the narrowing until the widening, the one
# that spans the narrowing, and the frame rates. Root, iproute2, and the
# aiortc of ./scripts/setup test (/opt/meshcam-aiortc).
#
#   tests/interop/aiortc_pair_narrowing.sh [WIDTH HEIGHT]
set -euo pipefail
cd "$(dirname "$0")"
python=/opt/meshcam-aiortc/bin/python
width=${1:-1280}
height=${2:-720}
dir=$(mktemp -d)
sender=mcpair-s-$$
receiver=mcpair-r-$$
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$sender" 2>/dev/null || true
    ip netns del "$receiver" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$sender"
ip netns add "$receiver"
ip link add mcps$$ netns "$sender" type veth peer name mcpr$$ netns "$receiver"
ip -n "$sender" addr add 10.216.0.1/24 dev mcps$$
ip -n "$receiver" addr add 10.216.0.2/24 dev mcpr$$
for ns in "$sender" "$receiver"; do
    ip -n "$ns" link set lo up
done
ip -n "$sender" link set mcps$$ up
ip -n "$receiver" link set mcpr$$ up
tc -n "$sender" qdisc replace dev mcps$$ root tbf rate 10gbit burst 16kb latency 100ms

ip netns exec "$receiver" "$python" aiortc_pair.py recv --dir "$dir" 2>"$dir/recv.log" &
pids+=($!)
ip netns exec "$sender" "$python" aiortc_pair.py send --dir "$dir" \
    --width "$width" --height "$height" 2>"$dir/send.log" &
pids+=($!)

deadline=$((SECONDS + 30))
until [ -s "$dir/frames" ]; do
    if [ $SECONDS -ge $deadline ]; then
        echo "no frame within 30 s" >&2
        cat "$dir/send.log" "$dir/recv.log" >&2
        exit 1
    fi
    sleep 0.1
done
sleep 15
narrowed=$(date +%s.%N)
tc -n "$sender" qdisc change dev mcps$$ root tbf rate 500kbit burst 16kb latency 100ms
sleep 40
widened=$(date +%s.%N)
tc -n "$sender" qdisc change dev mcps$$ root tbf rate 10gbit burst 16kb latency 100ms
sleep 20

python3 - "$dir" "$narrowed" "$widened" "$width" "$height" <<'EOF'
import sys

dir, narrowed, widened = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
times = [float(line) for line in open(f"{dir}/frames") if line.strip()]
sent = [tuple(map(float, line.split())) for line in open(f"{dir}/sent") if line.strip()]


def rate_between(start, end):
    inside = [t for t in times if start <= t <= end]
    fps = (len(inside) - 1) / (inside[-1] - inside[0]) if len(inside) > 1 else 0.0
    bytes_in = [(t, b) for t, b in sent if start <= t <= end]
    kbps = 0.0
    if len(bytes_in) > 1:
        (t0, b0), (t1, b1) = bytes_in[0], bytes_in[-1]
        kbps = (b1 - b0) * 8 / (t1 - t0) / 1000
    return fps, kbps


gaps = [(b - a, a, b) for a, b in zip(times, times[1:])]
settled = narrowed + 2.0
longest_settled = max(
    (min(b, widened) - max(a, settled) for _, a, b in gaps if b > settled and a < widened),
    default=0.0,
)
onset = max((g for g in gaps if g[2] > narrowed and g[1] < settled), default=(0.0, 0, 0))
before = rate_between(narrowed - 10, narrowed)
shaped = rate_between(settled, widened)
after = rate_between(widened + 5, widened + 20)
print(f"aiortc -> aiortc, VP8 {sys.argv[4]}x{sys.argv[5]}, 500 kbit/s for 40 s")
print(f"before the narrowing: {before[0]:.1f} fps, {before[1]:.0f} kbit/s sent")
print(
    f"onset: longest gap {onset[0]:.2f} s, from {onset[1] - narrowed:+.2f} s "
    f"to {onset[2] - narrowed:+.2f} s of the narrowing"
)
print(
    f"from 2 s after the narrowing to the widening: longest gap {longest_settled:.2f} s, "
    f"{shaped[0]:.1f} fps, {shaped[1]:.0f} kbit/s sent"
)
print(f"5-20 s after the widening: {after[0]:.1f} fps, {after[1]:.0f} kbit/s sent")
EOF
