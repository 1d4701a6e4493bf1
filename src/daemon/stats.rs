//! The telemetry of PROTOCOL.md, published every `stats_interval_s` on the
//! stats topic and returned by the `stats` command.
//!
//! It owns when telemetry is due, the sample its rates count from, and what
//! it says ([`Telemetry`] and [`connection`], pure builders); the daemon
//! gathers the facts. It must not change what it reports on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Daemon;
use super::commands::CommandCounters;
use super::pipeline::PipelineState;
use crate::media::VideoLayers;
use crate::participant::SignalCounters;
use crate::peer::{Adaptation, SendPath, SenderCounters};
use crate::procstat::Usage;
use crate::telemetry::{self, Rates, Sample};

/// When the next periodic telemetry is due, and what its rates count from.
pub(super) struct StatsSchedule {
    started: Instant,
    /// The samples of the last two periodic telemetries, latest first.
    last_sample: Sample,
    sample_before: Sample,
    next: Instant,
}

/// Rates count over at least this long: a `stats` reply just after a
/// periodic telemetry counts from the one before it, not over a few
/// milliseconds (3 frames in 50 ms would read as 60 fps).
const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);

impl StatsSchedule {
    pub(super) fn new(first_sample: Sample, interval: Duration) -> Self {
        Self {
            started: first_sample.at,
            last_sample: first_sample,
            sample_before: first_sample,
            next: first_sample.at + interval,
        }
    }

    /// What rates at `sample` count from.
    fn rates_base(&self, sample: &Sample) -> &Sample {
        if sample.at.saturating_duration_since(self.last_sample.at) >= MIN_RATE_WINDOW {
            &self.last_sample
        } else {
            &self.sample_before
        }
    }

    /// Takes the sample of a periodic telemetry.
    fn record(&mut self, sample: Sample) {
        self.sample_before = std::mem::replace(&mut self.last_sample, sample);
    }

    /// Whether periodic telemetry is due; if so, the next one is scheduled.
    fn due(&mut self, now: Instant, interval: Duration) -> bool {
        let due = now >= self.next;
        if due {
            self.next = now + interval;
        }
        due
    }
}

/// One viewer connection in telemetry's `connections`; `counters` is `None`
/// while its peer is not running.
fn connection(room: &str, peer: &str, connected: bool, counters: Option<&SenderCounters>) -> Value {
    let load = |f: fn(&SenderCounters) -> &AtomicU64| {
        counters.map(|c| f(c).load(Ordering::Relaxed)).unwrap_or(0)
    };
    let adaptation = counters.and_then(|c| {
        *c.adaptation
            .lock()
            .expect("adaptation lock is never poisoned")
    });
    let mut value = json!({
        "room": room,
        "peer": peer,
        "state": if connected { "connected" } else { "connecting" },
        "rtt_ms": match load(|c| &c.rtt_us) {
            0 => Value::Null,
            us => json!(telemetry::round1(us as f64 / 1000.0)),
        },
        "packets_sent": load(|c| &c.packets_sent),
        "bytes_sent": load(|c| &c.bytes_sent),
        "audio_packets_sent": load(|c| &c.audio_packets_sent),
        "nacks": load(|c| &c.nacks),
        "plis": load(|c| &c.keyframe_requests),
        "frames_dropped": load(|c| &c.frames_dropped),
        "talk_packets": load(|c| &c.talk_packets),
        "path": counters.and_then(|c| crate::peer::stats::path_name(c.path.load(Ordering::Relaxed))),
        "send_path": counters.map_or(SendPath::Tasks, SendPath::of).name(),
    });
    if let Some(a) = adaptation {
        let fields = value.as_object_mut().expect("an object");
        for (key, field) in adaptation_fields(&a) {
            fields.insert(key.into(), field);
        }
    }
    value
}

/// A connection's layer and what it was chosen from.
fn adaptation_fields(a: &Adaptation) -> [(&'static str, Value); 10] {
    let kbps = |bps: f64| json!((bps / 1000.0).round());
    [
        ("layer", json!(a.layer)),
        ("layer_width", json!(a.width)),
        ("layer_height", json!(a.height)),
        ("layer_pinned", json!(a.pinned)),
        ("layer_switches", json!(a.switches)),
        ("estimator", json!(a.estimate.source.name())),
        ("estimate_kbps", kbps(a.estimate.bps)),
        ("loss", json!((a.estimate.loss * 1000.0).round() / 1000.0)),
        (
            "nack_ratio",
            json!((a.estimate.nack_ratio * 1000.0).round() / 1000.0),
        ),
        ("padding_kbps", kbps(a.padding_bps)),
    ]
}

/// The layers of the pipeline: size, configured bitrate, whether encoded
/// now, and how many viewers get each.
fn layers(feeds: &VideoLayers) -> Value {
    feeds
        .iter()
        .map(|feed| {
            let s = &feed.state;
            json!({
                "width": s.width.load(Ordering::Relaxed),
                "height": s.height.load(Ordering::Relaxed),
                "bitrate_kbps": s.bitrate_kbps.load(Ordering::Relaxed),
                "available": s.is_available(),
                "watchers": feed.watchers(),
            })
        })
        .collect()
}

/// What the telemetry object says.
struct Telemetry<'a> {
    id: &'a str,
    uptime: Duration,
    /// Since the last periodic telemetry.
    rates: Rates,
    usage: Usage,
    tasks: usize,
    pipeline: PipelineState,
    restarts: u64,
    keyframes: u64,
    layers: Value,
    /// The microphone's pipeline: state, error, packets so far.
    audio: Value,
    /// The publication to the SFU.
    whip: Value,
    /// Talking back: the floor and the speaker.
    talk: Value,
    connections: Vec<Value>,
    send_loop: Value,
    signals: SignalCounters,
    commands: CommandCounters,
}

impl Telemetry<'_> {
    fn to_json(&self) -> Value {
        json!({
            "v": 1,
            "id": self.id,
            "uptime_s": self.uptime.as_secs(),
            "cpu_percent": telemetry::round1(self.rates.cpu_percent),
            "rss_bytes": self.usage.rss_bytes,
            "threads": self.usage.threads,
            "open_fds": self.usage.open_fds,
            "tasks": self.tasks,
            "pipeline": {
                "state": self.pipeline.name(),
                "fps": telemetry::round1(self.rates.fps),
                "bitrate_kbps": self.rates.bitrate_kbps.round(),
                "keyframes": self.keyframes,
                "restarts": self.restarts,
                "layers": self.layers,
            },
            "audio": self.audio,
            "whip": self.whip,
            "talk": self.talk,
            "connections": self.connections,
            "send_loop": self.send_loop,
            "signal": {
                "received": self.signals.received,
                "dropped": self.signals.dropped,
            },
            "commands": {
                "received": self.commands.received,
                "errors": self.commands.errors,
            },
        })
    }
}

impl Daemon {
    /// Telemetry at `sample`, with rates since the last periodic one.
    pub(super) fn telemetry(&self, sample: &Sample) -> Value {
        let connections = self
            .participant
            .mesh
            .links()
            .into_iter()
            .map(|(room, peer, link, connected)| {
                let counters = self.participant.peer(link).map(|p| &*p.counters);
                connection(&room, &peer, connected, counters)
            })
            .collect();
        let rates = telemetry::rates(self.stats.rates_base(sample), sample);
        Telemetry {
            id: &self.config.device.id,
            uptime: sample.at.duration_since(self.stats.started),
            rates,
            usage: sample.usage,
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            pipeline: self.pipeline.state(),
            restarts: self.pipeline.restarts(),
            keyframes: self.layers.top().counters.keyframes.load(Ordering::Relaxed),
            layers: layers(&self.layers),
            audio: json!({
                "state": self.audio.state().name(),
                "muted": self.config.audio.muted,
                "error": self.audio.error(),
                "restarts": self.audio.restarts(),
                "packets": self.audio.source.feed.counters.frames.load(Ordering::Relaxed),
                "bytes": self.audio.source.feed.counters.bytes.load(Ordering::Relaxed),
            }),
            whip: self.whip.status().to_json(rates.sfu_kbps),
            talk: self.talk_telemetry(),
            connections,
            send_loop: self.factory.send_loop_telemetry(),
            signals: self.participant.signals,
            commands: self.commands.counters(),
        }
        .to_json()
    }

    /// The counters telemetry's rates come from, now.
    pub(super) fn sample(&self, now: Instant) -> Sample {
        Sample::take(
            now,
            &self.layers.top().counters,
            self.whip.status().bytes_sent(),
        )
    }

    pub(super) fn publish_stats_if_due(&mut self, now: Instant) {
        let interval = Duration::from_secs(self.config.stats_interval_s);
        if !self.stats.due(now, interval) {
            return;
        }
        let sample = self.sample(now);
        let stats = self.telemetry(&sample);
        self.stats.record(sample);
        self.mqtt.publish(
            self.topics.stats(&self.config.device.id),
            serde_json::to_vec(&stats).expect("stats serialise"),
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_right_after_a_periodic_telemetry_count_from_the_one_before() {
        let t0 = Instant::now();
        let sample = |after_ms: u64| Sample {
            at: t0 + Duration::from_millis(after_ms),
            frames: after_ms * 30 / 1000,
            bytes: 0,
            sfu_bytes: 0,
            usage: Usage::default(),
        };
        let mut schedule = StatsSchedule::new(sample(0), Duration::from_secs(2));
        schedule.record(sample(2000));
        assert_eq!(schedule.rates_base(&sample(2050)).at, t0);
        assert_eq!(schedule.rates_base(&sample(3500)).at, sample(2000).at);
        let rates = telemetry::rates(schedule.rates_base(&sample(2050)), &sample(2050));
        assert!((rates.fps - 30.0).abs() < 1.0, "{rates:?}");
    }

    #[test]
    fn a_connection_reports_its_counters_and_no_rtt_until_measured() {
        let counters = SenderCounters::default();
        counters.packets_sent.store(18_000, Ordering::Relaxed);
        counters.bytes_sent.store(2_250_000, Ordering::Relaxed);
        counters.keyframe_requests.store(1, Ordering::Relaxed);
        assert_eq!(
            connection("home", "v-8f2c", true, Some(&counters)),
            json!({"room":"home","peer":"v-8f2c","state":"connected","rtt_ms":null,
                   "packets_sent":18000,"bytes_sent":2250000,"audio_packets_sent":0,
                   "nacks":0,"plis":1,
                   "frames_dropped":0,"talk_packets":0,"path":null,"send_path":"tasks"})
        );
        counters
            .send_path
            .store(SendPath::LoopGso as u8, Ordering::Relaxed);
        assert_eq!(
            connection("home", "v-8f2c", true, Some(&counters))["send_path"],
            "loop-gso"
        );
        counters.rtt_us.store(3_140, Ordering::Relaxed);
        assert_eq!(
            connection("home", "v-8f2c", true, Some(&counters))["rtt_ms"],
            3.1
        );
        *counters.adaptation.lock().unwrap() = Some(Adaptation {
            layer: 1,
            width: 640,
            height: 360,
            estimate: crate::adapt::Estimate {
                source: crate::adapt::Source::Loss,
                bps: 412_345.0,
                congested: false,
                acked_bps: None,
                headroom_bps: None,
                loss: 0.01234,
                nack_ratio: 0.0,
                sent_bps: 0.0,
            },
            switches: 2,
            pinned: None,
            padding_bps: 0.0,
        });
        let adapted = connection("home", "v-8f2c", true, Some(&counters));
        assert_eq!(adapted["layer"], 1);
        assert_eq!(adapted["layer_width"], 640);
        assert_eq!(adapted["estimator"], "loss");
        assert_eq!(adapted["estimate_kbps"], 412.0);
        assert_eq!(adapted["loss"], 0.012);
        assert_eq!(adapted["layer_switches"], 2);
        assert_eq!(adapted["layer_pinned"], Value::Null);
        let waiting = connection("home", "v-1", false, None);
        assert_eq!(waiting["state"], "connecting");
        assert_eq!(waiting["packets_sent"], 0);
    }

    #[test]
    fn telemetry_has_the_fields_of_the_protocol() {
        let t = Telemetry {
            id: "cam-kitchen",
            uptime: Duration::from_millis(3_600_900),
            rates: Rates {
                fps: 29.97,
                bitrate_kbps: 1980.4,
                sfu_kbps: 0.0,
                cpu_percent: 12.54,
            },
            usage: Usage {
                cpu: Duration::ZERO,
                rss_bytes: 31_457_280,
                threads: 24,
                open_fds: 41,
            },
            tasks: 37,
            pipeline: PipelineState::Playing,
            restarts: 0,
            keyframes: 61,
            layers: json!([{"width": 1280}]),
            audio: json!({"state": "off"}),
            whip: json!({"state": "off"}),
            talk: json!({"enabled": false}),
            connections: vec![json!({"room": "home"})],
            send_loop: json!({"send": "gso"}),
            signals: SignalCounters {
                received: 120,
                dropped: 0,
            },
            commands: CommandCounters {
                received: 4,
                errors: 1,
            },
        };
        assert_eq!(
            t.to_json(),
            json!({"v":1,"id":"cam-kitchen","uptime_s":3600,"cpu_percent":12.5,
                   "rss_bytes":31457280,"threads":24,"open_fds":41,"tasks":37,
                   "pipeline":{"state":"playing","fps":30.0,"bitrate_kbps":1980.0,
                               "keyframes":61,"restarts":0,"layers":[{"width":1280}]},
                   "audio":{"state":"off"},
                   "whip":{"state":"off"},
                   "talk":{"enabled":false},
                   "connections":[{"room":"home"}],
                   "send_loop":{"send":"gso"},
                   "signal":{"received":120,"dropped":0},
                   "commands":{"received":4,"errors":1}})
        );
    }

    #[test]
    fn telemetry_is_due_every_interval_from_the_last_one() {
        let t0 = Instant::now();
        let sample = Sample {
            at: t0,
            frames: 0,
            bytes: 0,
            sfu_bytes: 0,
            usage: Usage::default(),
        };
        let every = Duration::from_secs(10);
        let mut schedule = StatsSchedule::new(sample, every);
        assert!(!schedule.due(t0 + Duration::from_secs(9), every));
        let late = t0 + Duration::from_millis(10_300);
        assert!(schedule.due(late, every));
        assert!(!schedule.due(late + Duration::from_secs(9), every));
        assert!(schedule.due(late + every, every));
    }
}
