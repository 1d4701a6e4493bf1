//! Every GStreamer element meshcam can put in a pipeline, and the Debian
//! package that holds it.
//!
//! One table serves both ends. At start the daemon checks that each element
//! of the pipeline it is about to build exists, and when one does not it
//! names the package to install and exits with status 2, instead of
//! building a pipeline that never plays. The packaging test
//! (`tests/packages.rs`) asks the GStreamer registry and dpkg that each
//! element really comes from its package, and that `scripts/setup` and the
//! `.deb` install that package. The tests below read every description the
//! code can build, so an element added to a description but not to the
//! table fails them.

use std::fmt;

use super::description::{self, ENCODER_PREFERENCE, VideoParams};
use crate::config::VideoConfig;

/// One element factory and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub name: &'static str,
    /// The Debian (and Raspberry Pi OS) package that installs its plugin.
    pub package: &'static str,
    /// Registered only on some hardware (the Pi's encoder, camera modules):
    /// a machine without it is fine, and the `.deb` may recommend its
    /// package rather than depend on it.
    pub hardware_only: bool,
}

const fn element(name: &'static str, package: &'static str) -> Element {
    Element {
        name,
        package,
        hardware_only: false,
    }
}

const fn hardware(name: &'static str, package: &'static str) -> Element {
    Element {
        name,
        package,
        hardware_only: true,
    }
}

const BASE: &str = "gstreamer1.0-plugins-base";
const GOOD: &str = "gstreamer1.0-plugins-good";
const BAD: &str = "gstreamer1.0-plugins-bad";
const UGLY: &str = "gstreamer1.0-plugins-ugly";
const CORE: &str = "libgstreamer1.0-0";
const ALSA: &str = "gstreamer1.0-alsa";

/// The element factories of every pipeline description in [`description`],
/// [`super::audio::description`] and [`super::snapshot`]; `capsfilter` stands for every caps string.
pub const ELEMENTS: &[Element] = &[
    // Sources.
    element("videotestsrc", BASE),
    element("clockoverlay", "gstreamer1.0-x"),
    hardware("libcamerasrc", "gstreamer1.0-libcamera"),
    element("v4l2src", GOOD),
    element("decodebin", BASE),
    element("jpegdec", GOOD),
    // Conversion.
    element("capsfilter", CORE),
    element("videoconvert", BASE),
    element("videoscale", BASE),
    element("videorate", BASE),
    element("queue", CORE),
    element("tee", CORE),
    element("valve", CORE),
    // Encoders: one of them is enough.
    // The Pi's encoder is registered by the V4L2 plugin only where the
    // hardware encoder device exists.
    hardware("v4l2h264enc", GOOD),
    element("x264enc", UGLY),
    element("openh264enc", BAD),
    // Parse and hand over.
    element("h264parse", BAD),
    element("appsink", BASE),
    // Snapshots.
    element("appsrc", BASE),
    element("avdec_h264", "gstreamer1.0-libav"),
    element("openh264dec", BAD),
    element("jpegenc", GOOD),
    // The microphone ([`super::audio::description`]).
    element("audiotestsrc", BASE),
    element("alsasrc", ALSA),
    element("pulsesrc", GOOD),
    element("audioconvert", BASE),
    element("audioresample", BASE),
    element("volume", BASE),
    element("opusenc", BASE),
    // The echo canceller ([`super::echo`]; its probe is made in code).
    element("webrtcdsp", BAD),
    // The speaker ([`super::speaker`]).
    element("rtpjitterbuffer", GOOD),
    element("rtpopusdepay", GOOD),
    element("opusdec", BASE),
    element("alsasink", ALSA),
    element("pulsesink", GOOD),
];

/// The table entry of an element.
pub fn find(name: &str) -> Option<&'static Element> {
    ELEMENTS.iter().find(|e| e.name == name)
}

/// The element factory names of a gst-launch description, in order and
/// without repeats: the first word of each link, `capsfilter` for a caps
/// string, nothing for a reference to a named element (`name.`).
pub fn elements_of(description: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut link = String::new();
    let mut quoted = false;
    for c in description.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                link.push(c);
            }
            '!' if !quoted => links.push(std::mem::take(&mut link)),
            _ => link.push(c),
        }
    }
    links.push(link);
    let mut names: Vec<String> = Vec::new();
    for link in &links {
        let Some(first) = link.split_whitespace().next() else {
            continue;
        };
        let name = if first.contains('/') {
            "capsfilter"
        } else if first.ends_with('.') {
            continue;
        } else {
            first
        };
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// "`a` (Debian package P), `b` (Q): install one of them (apt-get install P)",
/// for a choice among elements such as the encoders.
pub fn one_of(names: &[&str]) -> String {
    let listed: Vec<String> = names.iter().map(|n| with_package(n)).collect();
    let suggested = names
        .iter()
        .filter_map(|n| find(n))
        .find(|e| !e.hardware_only)
        .map(|e| format!(" (apt-get install {})", e.package))
        .unwrap_or_default();
    format!(
        "none of {} is installed: install one of them{suggested}",
        listed.join(", ")
    )
}

fn with_package(name: &str) -> String {
    match find(name) {
        Some(e) if e.hardware_only => format!(
            "{name} (Debian package {}, on boards that have the hardware)",
            e.package
        ),
        Some(e) => format!("{name} (Debian package {})", e.package),
        None => format!("{name} (no Debian package is known to hold it)"),
    }
}

/// Elements the pipeline needs that GStreamer does not have: a fault of
/// the installation that no retry mends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingElements {
    /// Needed elements the registry lacks.
    pub elements: Vec<String>,
    /// `video.encoder = "auto"` found none of [`ENCODER_PREFERENCE`].
    pub no_encoder: bool,
}

impl fmt::Display for MissingElements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut packages: Vec<&str> = Vec::new();
        for name in &self.elements {
            if let Some(e) = find(name)
                && !packages.contains(&e.package)
            {
                packages.push(e.package);
            }
        }
        let install = match packages.as_slice() {
            [] => String::new(),
            [one] => format!(": install the Debian package {one} (apt-get install {one})"),
            many => format!(
                ": install the Debian packages {} (apt-get install {})",
                many.join(", "),
                many.join(" ")
            ),
        };
        match self.elements.as_slice() {
            [] => {}
            [name] => match find(name) {
                Some(_) => parts.push(format!("element {name} is missing{install}")),
                None => parts.push(format!(
                    "element {name} is missing (no Debian package is known to hold it)"
                )),
            },
            many => {
                let listed: Vec<String> = many.iter().map(|n| with_package(n)).collect();
                parts.push(format!(
                    "elements {} are missing{install}",
                    listed.join(", ")
                ));
            }
        }
        if self.no_encoder {
            parts.push(format!("no H.264 encoder: {}", one_of(&ENCODER_PREFERENCE)));
        }
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for MissingElements {}

/// Checks that every element of `description` (a pipeline meshcam builds)
/// is installed.
pub fn require(description: &str) -> Result<(), MissingElements> {
    let elements: Vec<String> = elements_of(description)
        .into_iter()
        .filter(|name| !super::has_element(name))
        .collect();
    if elements.is_empty() {
        Ok(())
    } else {
        Err(MissingElements {
            elements,
            no_encoder: false,
        })
    }
}

/// Chooses the encoder (`None` when the source delivers H.264 itself) and
/// checks that every element of the pipeline meshcam builds for `v` is
/// `available`. A missing optional encoder is fine while another one is
/// found. The user's own description (`source = "pipeline"`) is left to
/// GStreamer's parser.
pub fn check(
    v: &VideoConfig,
    p: &VideoParams,
    available: impl Fn(&str) -> bool,
) -> Result<Option<String>, MissingElements> {
    let needs_encoder = description::needs_encoder(v);
    let chosen = needs_encoder
        .then(|| description::choose_encoder(&v.encoder, &available))
        .flatten();
    let no_encoder = needs_encoder && chosen.is_none() && v.encoder == "auto";
    // Without an encoder the rest of the pipeline is still checked, with a
    // stand-in that is not reported again.
    let probe = chosen.as_deref().or(match (needs_encoder, no_encoder) {
        (false, _) => None,
        (true, true) => Some(ENCODER_PREFERENCE[0]),
        (true, false) => Some(v.encoder.as_str()),
    });
    let elements: Vec<String> = elements_of(&description::own_description(v, p, probe))
        .into_iter()
        .filter(|name| !available(name))
        .filter(|name| !(no_encoder && ENCODER_PREFERENCE.contains(&name.as_str())))
        .collect();
    if elements.is_empty() && !no_encoder {
        Ok(chosen)
    } else {
        Err(MissingElements {
            elements,
            no_encoder,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AudioConfig, AudioSource, SourceFormat, SourceKind};
    use crate::media::{audio, snapshot};

    /// Every source the configuration can name, with every format.
    fn every_source() -> Vec<VideoConfig> {
        use SourceFormat::*;
        use SourceKind::*;
        let kinds = [V4l2, Libcamera, Test, Pipeline];
        // A new source kind or format must be added to the lists here:
        // these matches stop compiling until it is.
        for kind in kinds {
            match kind {
                V4l2 | Libcamera | Test | Pipeline => {}
            }
        }
        let formats = [Auto, Raw, Mjpeg, H264];
        for format in formats {
            match format {
                Auto | Raw | Mjpeg | H264 => {}
            }
        }
        let mut all = Vec::new();
        for source in kinds {
            for format in formats {
                all.push(VideoConfig {
                    source,
                    format,
                    pipeline: "videotestsrc ! video/x-raw".into(),
                    ..VideoConfig::default()
                });
            }
        }
        all
    }

    /// Every description meshcam can build: each source with each encoder
    /// (the part meshcam chooses), and the snapshot with each decoder.
    fn every_description() -> Vec<String> {
        let mut all = Vec::new();
        for v in every_source() {
            let p = VideoParams::from_config(&v);
            for encoder in ENCODER_PREFERENCE {
                all.push(description::own_description(&v, &p, Some(encoder)));
            }
        }
        for decoder in snapshot::DECODERS {
            all.push(snapshot::snapshot_description(decoder));
        }
        all.extend(every_microphone());
        all.extend(every_speaker());
        all
    }

    /// The speaker's pipeline for every sink the configuration can name
    /// (none has no pipeline; an own one is the user's).
    fn every_speaker() -> Vec<String> {
        use crate::config::{SpeakerConfig, SpeakerSink::*};
        let sinks = [Alsa, Pulse, Pipeline, None];
        // A new sink must be added to the list: this match stops
        // compiling until it is.
        for sink in sinks {
            match sink {
                Alsa | Pulse | Pipeline | None => {}
            }
        }
        sinks
            .into_iter()
            .flat_map(|sink| [(sink, false), (sink, true)])
            .filter_map(|(sink, cancel_echo)| {
                let speaker = SpeakerConfig {
                    sink,
                    pipeline: "pulsesink".into(),
                    ..SpeakerConfig::default()
                };
                super::super::speaker::pipeline_description(&speaker, cancel_echo)
            })
            .collect()
    }

    /// The microphone's pipeline for every source the configuration can
    /// name (none has no pipeline; an own one is the user's).
    fn every_microphone() -> Vec<String> {
        use AudioSource::*;
        let sources = [Alsa, Pulse, Test, Pipeline, None];
        // A new source must be added to the list: this match stops
        // compiling until it is.
        for source in sources {
            match source {
                Alsa | Pulse | Test | Pipeline | None => {}
            }
        }
        let audio = AudioConfig {
            pipeline: "audiotestsrc".into(),
            ..AudioConfig::default()
        };
        sources
            .into_iter()
            .flat_map(|source| [(source, false), (source, true)])
            .filter_map(|(source, cancel_echo)| {
                audio::description::pipeline_description(&audio, source, cancel_echo)
            })
            .collect()
    }

    #[test]
    fn every_element_of_every_description_is_in_the_table() {
        let mut named = Vec::new();
        for d in every_description() {
            for name in elements_of(&d) {
                assert!(
                    find(&name).is_some(),
                    "{name} is not in ELEMENTS: add it with its Debian package; in {d}"
                );
                named.push(name);
            }
        }
        for e in ELEMENTS {
            assert!(
                named.iter().any(|n| n == e.name),
                "{} is in ELEMENTS but no description uses it",
                e.name
            );
        }
        let mut names: Vec<&str> = ELEMENTS.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ELEMENTS.len(), "an element is listed twice");
    }

    #[test]
    fn the_description_reader_agrees_with_gstreamer() {
        use gstreamer::prelude::*;
        gstreamer::init().unwrap();
        let mut compared = Vec::new();
        for d in every_description() {
            let names = elements_of(&d);
            if !names.iter().all(|n| super::super::has_element(n)) {
                continue;
            }
            let bin = gstreamer::parse::launch(&d)
                .unwrap_or_else(|e| panic!("{d}: {e}"))
                .downcast::<gstreamer::Bin>()
                .unwrap_or_else(|_| panic!("not a bin: {d}"));
            let mut built: Vec<String> = bin
                .iterate_elements()
                .into_iter()
                .map(|e| e.unwrap().factory().unwrap().name().to_string())
                .collect();
            built.sort_unstable();
            built.dedup();
            let mut read = names.clone();
            read.sort_unstable();
            assert_eq!(read, built, "{d}");
            compared.push(d);
        }
        // The test picture with x264enc and the snapshot need no special
        // hardware: they are always compared (./scripts/setup installs them).
        let v = VideoConfig::default();
        let default =
            description::own_description(&v, &VideoParams::from_config(&v), Some("x264enc"));
        assert!(compared.contains(&default), "not installed here: {default}");
        assert!(compared.contains(&snapshot::snapshot_description("avdec_h264")));
    }

    #[test]
    fn quoted_bangs_and_references_are_not_elements() {
        assert_eq!(
            elements_of(
                "videotestsrc ! video/x-raw,width=2 ! clockoverlay text=\"a ! b\" ! \
                 tee name=t ! queue ! fakesink t. ! queue ! appsink"
            ),
            [
                "videotestsrc",
                "capsfilter",
                "clockoverlay",
                "tee",
                "queue",
                "fakesink",
                "appsink"
            ]
        );
    }

    fn test_source() -> VideoConfig {
        VideoConfig::default()
    }

    fn check_without(v: &VideoConfig, absent: &[&str]) -> Result<Option<String>, MissingElements> {
        check(v, &VideoParams::from_config(v), |n| !absent.contains(&n))
    }

    #[test]
    fn a_missing_element_names_its_package() {
        let e = check_without(&test_source(), &["clockoverlay"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "element clockoverlay is missing: install the Debian package gstreamer1.0-x \
             (apt-get install gstreamer1.0-x)"
        );
        let e = check_without(&test_source(), &["clockoverlay", "h264parse", "queue"]).unwrap_err();
        assert_eq!(e.elements, ["clockoverlay", "queue", "h264parse"]);
        assert_eq!(
            e.to_string(),
            "elements clockoverlay (Debian package gstreamer1.0-x), queue (Debian package \
             libgstreamer1.0-0), h264parse (Debian package gstreamer1.0-plugins-bad) are \
             missing: install the Debian packages gstreamer1.0-x, libgstreamer1.0-0, \
             gstreamer1.0-plugins-bad (apt-get install gstreamer1.0-x libgstreamer1.0-0 \
             gstreamer1.0-plugins-bad)"
        );
    }

    #[test]
    fn a_missing_optional_encoder_is_fine_while_another_is_found() {
        let v = test_source();
        assert_eq!(
            check_without(&v, &[]).unwrap().as_deref(),
            Some("v4l2h264enc")
        );
        assert_eq!(
            check_without(&v, &["v4l2h264enc"]).unwrap().as_deref(),
            Some("x264enc")
        );
        assert_eq!(
            check_without(&v, &["v4l2h264enc", "x264enc"])
                .unwrap()
                .as_deref(),
            Some("openh264enc")
        );
    }

    #[test]
    fn no_encoder_at_all_names_the_three_and_their_packages() {
        let e = check_without(&test_source(), &ENCODER_PREFERENCE).unwrap_err();
        assert!(e.no_encoder && e.elements.is_empty(), "{e:?}");
        let text = e.to_string();
        for expected in [
            "no H.264 encoder",
            "v4l2h264enc (Debian package gstreamer1.0-plugins-good",
            "x264enc (Debian package gstreamer1.0-plugins-ugly)",
            "openh264enc (Debian package gstreamer1.0-plugins-bad)",
            "apt-get install gstreamer1.0-plugins-ugly",
        ] {
            assert!(text.contains(expected), "{expected:?} not in {text}");
        }
        // The rest of the pipeline is still checked.
        let mut absent = ENCODER_PREFERENCE.to_vec();
        absent.push("videoconvert");
        let e = check_without(&test_source(), &absent).unwrap_err();
        assert!(e.no_encoder, "{e:?}");
        assert_eq!(e.elements, ["videoconvert"]);
        assert!(
            e.to_string()
                .starts_with("element videoconvert is missing: install the Debian package gstreamer1.0-plugins-base"),
            "{e}"
        );
    }

    #[test]
    fn an_explicit_encoder_that_is_missing_is_named() {
        let v = VideoConfig {
            encoder: "x264enc".into(),
            ..test_source()
        };
        let e = check_without(&v, &["x264enc"]).unwrap_err();
        assert!(!e.no_encoder);
        assert_eq!(
            e.to_string(),
            "element x264enc is missing: install the Debian package gstreamer1.0-plugins-ugly \
             (apt-get install gstreamer1.0-plugins-ugly)"
        );
    }

    #[test]
    fn h264_from_the_camera_needs_no_encoder() {
        let v = VideoConfig {
            source: SourceKind::V4l2,
            format: SourceFormat::H264,
            ..test_source()
        };
        assert_eq!(check_without(&v, &ENCODER_PREFERENCE), Ok(None));
        let e = check_without(&v, &["v4l2src"]).unwrap_err();
        assert_eq!(e.elements, ["v4l2src"]);
    }

    #[test]
    fn a_user_pipeline_is_left_to_the_parser() {
        let v = VideoConfig {
            source: SourceKind::Pipeline,
            pipeline: "nosuchsrc ! video/x-raw".into(),
            ..test_source()
        };
        assert_eq!(
            check(&v, &VideoParams::from_config(&v), |n| n != "nosuchsrc")
                .unwrap()
                .as_deref(),
            Some("v4l2h264enc")
        );
        // What meshcam adds after it is checked.
        let e = check_without(&v, &["h264parse"]).unwrap_err();
        assert_eq!(e.elements, ["h264parse"]);
    }

    #[test]
    fn an_unknown_element_says_so() {
        let e = MissingElements {
            elements: vec!["nosuchenc".into()],
            no_encoder: false,
        };
        assert_eq!(
            e.to_string(),
            "element nosuchenc is missing (no Debian package is known to hold it)"
        );
    }

    #[test]
    fn a_snapshot_without_decoder_names_both() {
        assert_eq!(
            one_of(&snapshot::DECODERS),
            "none of avdec_h264 (Debian package gstreamer1.0-libav), openh264dec (Debian \
             package gstreamer1.0-plugins-bad) is installed: install one of them \
             (apt-get install gstreamer1.0-libav)"
        );
    }
}
