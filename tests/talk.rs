//! Talking back through the camera, with viewers that are not ours
//! (GStreamer's webrtcbin, tests/interop/webrtcbin_viewer.py) on a LAN
//! without routes: a viewer asks for the floor, the camera grants it,
//! offers again, and plays the viewer's tone on its speaker, here a
//! pipeline sink that writes what it plays to a file the test reads; a
//! second viewer is refused with the holder's name, gets the floor once
//! the first releases it, and loses it when its process is killed.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::netns::{Net, NsBroker, NsCamera, Routes, observer};
use common::webrtcbin::WebrtcbinViewer;
use common::{SMALL_VIDEO, stats_topic};

const RATE: usize = 48_000;
/// Waiting for a step of talking: a signal and a renegotiation.
const STEP: Duration = Duration::from_secs(15);

/// `talk` is the `[talk]` section.
fn camera_toml(played: &Path, talk: &str) -> String {
    format!(
        "rooms = [\"home\"]\n{SMALL_VIDEO}[speaker]\nsink = \"pipeline\"\n\
         pipeline = \"audioconvert ! audio/x-raw,format=S16LE,channels=1,rate={RATE} ! \
         filesink buffer-mode=unbuffered location={}\"\n[talk]\n{talk}",
        played.display()
    )
}

/// The samples the speaker played so far.
fn played(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Root mean square, full scale 1.0.
fn level(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples
        .iter()
        .map(|s| (f64::from(*s) / 32768.0).powi(2))
        .sum();
    (sum / samples.len() as f64).sqrt()
}

/// The pitch of a tone, from its upward zero crossings.
fn pitch(samples: &[i16]) -> f64 {
    let crossings = samples.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
    crossings as f64 * RATE as f64 / samples.len() as f64
}

/// Waits until the speaker has played `seconds` more of sound past
/// `from` samples; returns those samples.
fn wait_played(path: &Path, from: usize, seconds: f64) -> Vec<i16> {
    let want = from + (seconds * RATE as f64) as usize;
    let end = Instant::now() + STEP;
    loop {
        let samples = played(path);
        if samples.len() >= want {
            return samples[from..want].to_vec();
        }
        assert!(
            Instant::now() < end,
            "the speaker played {} samples, waiting for {want}",
            samples.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The samples played once the speaker has stopped writing for 300 ms.
fn settled(path: &Path) -> usize {
    let end = Instant::now() + STEP;
    let mut last = played(path).len();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = played(path).len();
        if now == last {
            return now;
        }
        assert!(Instant::now() < end, "the speaker never stopped playing");
        last = now;
    }
}

fn talk_event(viewer: &mut WebrtcbinViewer, action: &str) -> Value {
    viewer.wait(&format!("talk {action}"), STEP, |v| {
        v["event"] == "talk" && v["action"] == action
    })
}

/// Fields drop in order: the camera before the directory its speaker
/// writes in, and before its network.
struct Setup {
    cam: NsCamera,
    _speaker_dir: common::TempDir,
    _broker: NsBroker,
    net: Net,
    played: PathBuf,
}

fn setup(id: &str, talk: &str) -> Setup {
    let net = Net::new(Routes::ConnectedOnly);
    let broker = NsBroker::start(&net);
    let dir = common::temp_dir(&format!("{id}-speaker"));
    let played = dir.join("played.raw");
    let cam = NsCamera::start(&net, id, &camera_toml(&played, talk));
    Setup {
        cam,
        _speaker_dir: dir,
        _broker: broker,
        net,
        played,
    }
}

fn viewer(s: &Setup, id: &str, hz: &str) -> WebrtcbinViewer {
    let hz = hz.to_owned();
    let mut v = WebrtcbinViewer::start(
        &s.net.viewer,
        &s.net.broker_url(),
        s.net.viewer_addr,
        "home",
        id,
        &["--no-decode", "--talker", "--talk-hz", &hz],
    );
    v.wait_frames(10, 1, Duration::from_secs(20));
    v
}

#[test]
fn a_webrtcbin_viewer_that_talks_is_heard_at_its_pitch_and_silent_after_release() {
    let s = setup("cam-talk", "");
    let mut obs = observer(
        &s.net.viewer,
        &s.net,
        "obs-talk",
        &[&stats_topic(&s.cam.id)],
    );
    let mut talker = viewer(&s, "wbin-talker", "660");
    talker.process.send("talk");
    talk_event(&mut talker, "granted");
    let stats = obs.wait_json(&stats_topic(&s.cam.id), "the talker holds the floor", |v| {
        v["talk"]["holder"]["peer"] == "wbin-talker"
    });
    assert_eq!(stats["talk"]["speaker"]["state"], "playing", "{stats}");
    assert_eq!(stats["talk"]["enabled"], true, "{stats}");

    // Skip what the jitter buffer and the decoder start with.
    let start = played(&s.played).len();
    let heard = wait_played(&s.played, start, 1.0);
    let heard = wait_played(&s.played, start + heard.len() / 2, 1.0);
    let hz = pitch(&heard);
    assert!(
        (640.0..680.0).contains(&hz),
        "heard {hz:.0} Hz, sent 660 Hz"
    );
    assert!(level(&heard) > 0.1, "level {:.3}", level(&heard));

    talker.process.send("release");
    obs.wait_json(&stats_topic(&s.cam.id), "the floor is free", |v| {
        v["talk"]["holder"].is_null() && v["talk"]["enabled"] == true
    });
    // What the jitter buffer held plays out; then nothing more.
    let after = settled(&s.played);
    std::thread::sleep(Duration::from_secs(2));
    let later = played(&s.played);
    assert!(
        level(&later[after..]) < 0.01,
        "{} samples after the release, level {:.3}",
        later.len() - after,
        level(&later[after..])
    );
}

#[test]
fn two_viewers_contend_for_the_floor_and_a_killed_holder_frees_it() {
    let s = setup("cam-floor", "silence_s = 5\n");
    let mut obs = observer(
        &s.net.viewer,
        &s.net,
        "obs-floor",
        &[&stats_topic(&s.cam.id)],
    );
    let mut first = viewer(&s, "wbin-first", "440");
    let mut second = viewer(&s, "wbin-second", "880");

    first.process.send("talk");
    talk_event(&mut first, "granted");
    second.process.send("talk");
    let refused = talk_event(&mut second, "refused");
    assert_eq!(refused["reason"], "taken", "{refused}");
    assert_eq!(refused["holder"]["peer"], "wbin-first", "{refused}");

    first.process.send("release");
    // The camera's answer to the release, not telemetry: a report sent
    // before the release may still be on its way.
    let ended = talk_event(&mut first, "ended");
    assert_eq!(ended["reason"], "released", "{ended}");
    second.process.send("talk");
    talk_event(&mut second, "granted");
    obs.wait_json(&stats_topic(&s.cam.id), "the second holds the floor", |v| {
        v["talk"]["holder"]["peer"] == "wbin-second"
    });
    let start = played(&s.played).len();
    let heard = wait_played(&s.played, start + RATE / 2, 1.0);
    let hz = pitch(&heard);
    assert!(
        (850.0..910.0).contains(&hz),
        "heard {hz:.0} Hz, sent 880 Hz"
    );

    // The holder vanishes without a word: the floor is free once its
    // connection is gone.
    common::kill(&second.process.child, libc::SIGKILL);
    obs.wait_json(
        &stats_topic(&s.cam.id),
        "the floor freed by the connection's end",
        |v| v["talk"]["holder"].is_null(),
    );
    first.process.send("talk");
    talk_event(&mut first, "granted");
}

/// The silence rule, against a talker we did not write at the camera's
/// defaults (`silence_s` 15, `max_s` 120), for minutes: a talker that keeps
/// sounding keeps the floor; one that sends packets of silence (no DTX,
/// webrtcbin's and Chromium's default) loses it once `silence_s` has
/// passed, told `silent`.
#[test]
fn a_webrtcbin_talker_keeps_the_floor_for_minutes_while_it_sounds_and_loses_it_once_silent() {
    const TALK: Duration = Duration::from_secs(100);
    const SILENCE: Duration = Duration::from_secs(15);
    let s = setup("cam-silence", "");
    let mut talker = viewer(&s, "wbin-long", "660");
    talker.process.send("talk");
    talk_event(&mut talker, "granted");
    let granted = Instant::now();
    // Any end of the turn while it sounds fails here.
    let ended = talker
        .process
        .wait_for_optional(TALK, |v| v["event"] == "talk" && v["action"] == "ended");
    assert!(
        ended.is_none(),
        "the turn ended while the talker sounded: {ended:?}"
    );
    assert!(granted.elapsed() >= TALK);

    talker.process.send("hush");
    let hushed = Instant::now();
    let ended = talker.wait("the end of the turn", SILENCE + STEP, |v| {
        v["event"] == "talk" && v["action"] == "ended"
    });
    let after = hushed.elapsed();
    assert_eq!(ended["reason"], "silent", "{ended}");
    assert!(
        after >= SILENCE - Duration::from_secs(1) && after <= SILENCE + Duration::from_secs(4),
        "ended {after:?} after the talker fell silent"
    );
}
