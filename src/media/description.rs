//! The GStreamer pipeline as a gst-launch description, built from the video
//! configuration; and the choice of H.264 encoder.
//!
//! Pure functions: the description for every source kind and encoder is
//! covered by tests here, including the Pi's `v4l2h264enc` path, which only
//! runs on the Pi itself.
//!
//! One capture and one conversion feed a `tee`; each layer is a branch of
//! it with its own scaler, encoder (`encoder{i}`), parser and appsink
//! (`sink{i}`). Every branch but the top one starts behind a closed `valve`
//! (`gate{i}`): a layer nobody gets costs nothing until a viewer needs it.
//! The valve lets sticky events through (caps, segment, end of stream), so
//! a source that ends ends every branch, and the pipeline reports it.
//! A source that delivers H.264 itself is passed through as the one layer.

use crate::config::{LayerConfig, SourceFormat, SourceKind, VideoConfig};

/// Encoders in order of preference: those the configuration accepts.
pub const ENCODER_PREFERENCE: [&str; 3] = crate::config::ENCODERS;

/// The parameters that shape the pipeline (the configuration, after `set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoParams {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub keyframe_interval_s: u32,
    /// The layers below the top one, best first.
    pub lower: Vec<LayerConfig>,
}

impl VideoParams {
    pub fn from_config(v: &VideoConfig) -> Self {
        Self {
            width: v.width,
            height: v.height,
            fps: v.fps,
            bitrate_kbps: v.bitrate_kbps,
            keyframe_interval_s: v.keyframe_interval_s,
            lower: v.lower_layers(),
        }
    }

    /// Every layer, the top one first.
    pub fn layers(&self) -> Vec<LayerConfig> {
        let top = LayerConfig {
            width: self.width,
            height: self.height,
            bitrate_kbps: self.bitrate_kbps,
        };
        std::iter::once(top)
            .chain(self.lower.iter().copied())
            .collect()
    }

    /// The same with the top layer only.
    pub fn top_only(&self) -> Self {
        Self {
            lower: Vec::new(),
            ..self.clone()
        }
    }

    /// These parameters for layer `layer` alone.
    fn layer(&self, layer: &LayerConfig) -> Self {
        Self {
            width: layer.width,
            height: layer.height,
            bitrate_kbps: layer.bitrate_kbps,
            ..self.top_only()
        }
    }

    fn raw_caps(&self) -> String {
        format!(
            "video/x-raw,width={},height={},framerate={}/1",
            self.width, self.height, self.fps
        )
    }

    fn gop(&self) -> u32 {
        self.fps * self.keyframe_interval_s
    }
}

/// Picks the encoder: `preference` is `auto` (the first of
/// [`ENCODER_PREFERENCE`] that is available) or an element name, which must
/// be available itself; `available` says whether the GStreamer registry has
/// an element. `None` when there is no such encoder.
pub fn choose_encoder(preference: &str, available: impl Fn(&str) -> bool) -> Option<String> {
    if preference != "auto" {
        return available(preference).then(|| preference.to_owned());
    }
    ENCODER_PREFERENCE
        .iter()
        .find(|name| available(name))
        .map(|name| name.to_string())
}

/// The source part of the pipeline and whether it already delivers H.264.
pub fn source_description(v: &VideoConfig, p: &VideoParams) -> (String, bool) {
    let caps = |media: &str| {
        format!(
            "{media},width={},height={},framerate={}/1",
            p.width, p.height, p.fps
        )
    };
    match v.source {
        SourceKind::Test => (
            format!(
                "videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! {} ! \
                 clockoverlay time-format=\"%H:%M:%S\" font-desc=\"Sans 24\"",
                p.raw_caps()
            ),
            false,
        ),
        SourceKind::Libcamera => (format!("libcamerasrc ! {}", p.raw_caps()), false),
        SourceKind::V4l2 => {
            let src = format!("v4l2src device=\"{}\"", v.device);
            match v.format {
                SourceFormat::Auto => (format!("{src} ! decodebin"), false),
                SourceFormat::Raw => (format!("{src} ! {}", caps("video/x-raw")), false),
                SourceFormat::Mjpeg => (format!("{src} ! {} ! jpegdec", caps("image/jpeg")), false),
                SourceFormat::H264 => (format!("{src} ! {}", caps("video/x-h264")), true),
            }
        }
        SourceKind::Pipeline => (v.pipeline.trim().to_owned(), v.format == SourceFormat::H264),
    }
}

/// The encoder element of layer `index` (named `encoder{index}`) with its
/// rate control, GOP and profile.
pub fn encoder_description(encoder: &str, p: &VideoParams, index: usize) -> String {
    let element = match encoder {
        "v4l2h264enc" => format!(
            "v4l2h264enc name=encoder{index} extra-controls=\"controls,video_bitrate={},\
             h264_i_frame_period={},repeat_sequence_header=1\" ! video/x-h264,level=(string)4",
            p.bitrate_kbps * 1000,
            p.gop()
        ),
        "x264enc" => format!(
            "x264enc name=encoder{index} tune=zerolatency speed-preset=ultrafast bitrate={} \
             key-int-max={} bframes=0 byte-stream=true trellis=false vbv-buf-capacity=300",
            p.bitrate_kbps,
            p.gop()
        ),
        "openh264enc" => format!(
            "openh264enc name=encoder{index} bitrate={} rate-control=bitrate complexity=low gop-size={}",
            p.bitrate_kbps * 1000,
            p.gop()
        ),
        other => format!("{other} name=encoder{index}"),
    };
    format!("{element} ! video/x-h264,profile=constrained-baseline")
}

/// How many layers the pipeline of these settings encodes: one for a source
/// that delivers H.264 itself.
pub fn layer_count(encoded: bool, p: &VideoParams, encoder: Option<&str>) -> usize {
    match (encoded, encoder) {
        (false, Some(_)) => 1 + p.lower.len(),
        _ => 1,
    }
}

/// The whole pipeline: source, (convert, split, scale and encode per
/// layer,) one appsink per layer, `sink{i}`, that receives one byte-stream
/// access unit per buffer.
pub fn pipeline_description(v: &VideoConfig, p: &VideoParams, encoder: Option<&str>) -> String {
    let (source, encoded) = source_description(v, p);
    format!("{source} ! {}", downstream_description(encoded, p, encoder))
}

fn sink_description(index: usize) -> String {
    format!(
        "h264parse config-interval=-1 ! \
         video/x-h264,stream-format=byte-stream,alignment=au ! \
         appsink name=sink{index} max-buffers=4 drop=true sync=false async=false"
    )
}

/// What follows the source: (convert, then per layer scale and encode,)
/// parse, appsink.
fn downstream_description(encoded: bool, p: &VideoParams, encoder: Option<&str>) -> String {
    let (false, Some(encoder)) = (encoded, encoder) else {
        return sink_description(0);
    };
    let queue = "queue max-size-buffers=2 leaky=downstream";
    let mut d = format!(
        "videoconvert ! videoscale ! videorate ! {},format=I420 ! tee name=split",
        p.raw_caps()
    );
    for (index, layer) in p.layers().iter().enumerate() {
        let lp = p.layer(layer);
        let head = if index == 0 {
            queue.to_owned()
        } else {
            format!(
                "valve name=gate{index} drop=true drop-mode=forward-sticky-events ! {queue} ! videoscale ! {},format=I420",
                lp.raw_caps()
            )
        };
        d.push_str(&format!(
            " split. ! {head} ! {} ! {}",
            encoder_description(encoder, &lp, index),
            sink_description(index)
        ));
    }
    d
}

/// The part of the pipeline whose elements meshcam chooses: all of it, but
/// for `source = "pipeline"` only what follows the user's own description
/// (GStreamer names a missing element of that one when it parses it).
pub fn own_description(v: &VideoConfig, p: &VideoParams, encoder: Option<&str>) -> String {
    match v.source {
        SourceKind::Pipeline => downstream_description(source_description(v, p).1, p, encoder),
        _ => pipeline_description(v, p, encoder),
    }
}

/// Whether the pipeline needs an encoder at all.
pub fn needs_encoder(v: &VideoConfig) -> bool {
    let p = VideoParams::from_config(v);
    !source_description(v, &p).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(source: SourceKind, format: SourceFormat) -> VideoConfig {
        VideoConfig {
            source,
            format,
            pipeline: "videotestsrc ! video/x-raw".into(),
            ..VideoConfig::default()
        }
    }

    #[test]
    fn the_hardware_encoder_wins_when_present() {
        assert_eq!(choose_encoder("auto", |_| true).unwrap(), "v4l2h264enc");
        assert_eq!(
            choose_encoder("auto", |n| n != "v4l2h264enc").unwrap(),
            "x264enc"
        );
        assert_eq!(
            choose_encoder("auto", |n| n == "openh264enc").unwrap(),
            "openh264enc"
        );
        assert_eq!(choose_encoder("auto", |_| false), None);
    }

    #[test]
    fn an_explicit_encoder_must_exist() {
        assert_eq!(choose_encoder("x264enc", |_| true).unwrap(), "x264enc");
        assert_eq!(choose_encoder("v4l2h264enc", |n| n == "x264enc"), None);
    }

    #[test]
    fn every_encoder_yields_constrained_baseline_with_the_bitrate() {
        let p = VideoParams::from_config(&VideoConfig::default());
        let pi = encoder_description("v4l2h264enc", &p, 0);
        assert!(pi.contains("video_bitrate=2000000"), "{pi}");
        assert!(pi.contains("h264_i_frame_period=60"), "{pi}");
        assert!(pi.contains("repeat_sequence_header=1"), "{pi}");
        let x264 = encoder_description("x264enc", &p, 0);
        assert!(
            x264.contains("bitrate=2000 ") && x264.contains("tune=zerolatency"),
            "{x264}"
        );
        let open = encoder_description("openh264enc", &p, 0);
        assert!(open.contains("bitrate=2000000"), "{open}");
        for d in [pi, x264, open] {
            assert!(d.contains("name=encoder0"));
            assert!(d.ends_with("profile=constrained-baseline"), "{d}");
        }
    }

    #[test]
    fn sources_map_to_their_elements() {
        let p = VideoParams::from_config(&VideoConfig::default());
        let (test, encoded) = source_description(&video(SourceKind::Test, SourceFormat::Auto), &p);
        assert!(test.contains("videotestsrc") && test.contains("clockoverlay") && !encoded);
        let (cam, _) = source_description(&video(SourceKind::Libcamera, SourceFormat::Auto), &p);
        assert!(cam.starts_with("libcamerasrc"));
        let (mjpeg, _) = source_description(&video(SourceKind::V4l2, SourceFormat::Mjpeg), &p);
        assert!(
            mjpeg.contains("image/jpeg") && mjpeg.contains("jpegdec"),
            "{mjpeg}"
        );
        let (h264, encoded) = source_description(&video(SourceKind::V4l2, SourceFormat::H264), &p);
        assert!(h264.contains("video/x-h264") && encoded);
        let (raw, _) = source_description(&video(SourceKind::V4l2, SourceFormat::Raw), &p);
        assert!(
            raw.contains("v4l2src device=\"/dev/video0\" ! video/x-raw"),
            "{raw}"
        );
    }

    #[test]
    fn h264_sources_pass_through_without_an_encoder() {
        let v = video(SourceKind::V4l2, SourceFormat::H264);
        assert!(!needs_encoder(&v));
        let p = VideoParams::from_config(&v);
        let d = pipeline_description(&v, &p, Some("x264enc"));
        assert!(!d.contains("x264enc"), "{d}");
        assert!(d.ends_with("appsink name=sink0 max-buffers=4 drop=true sync=false async=false"));
        assert_eq!(layer_count(true, &p, Some("x264enc")), 1);
    }

    #[test]
    fn raw_sources_are_converted_once_and_encoded_once_per_layer() {
        let v = video(SourceKind::Test, SourceFormat::Auto);
        let p = VideoParams::from_config(&v);
        let d = pipeline_description(&v, &p, Some("x264enc"));
        assert_eq!(d.matches("videoconvert").count(), 1);
        assert_eq!(d.matches("x264enc").count(), 2);
        assert_eq!(d.matches("appsink").count(), 2);
        assert_eq!(layer_count(false, &p, Some("x264enc")), 2);
        // The low layer: a quarter of the pixels at a fifth of the bitrate,
        // behind a closed valve.
        assert!(
            d.contains(
                "valve name=gate1 drop=true drop-mode=forward-sticky-events ! queue max-size-buffers=2 leaky=downstream ! \
                        videoscale ! video/x-raw,width=640,height=360,framerate=30/1,format=I420 ! \
                        x264enc name=encoder1"
            ),
            "{d}"
        );
        assert!(d.contains("bitrate=400 "), "{d}");
        assert!(!d.contains("gate0"), "the top layer always runs: {d}");
        let single = pipeline_description(&v, &p.top_only(), Some("x264enc"));
        assert_eq!(single.matches("x264enc").count(), 1);
        assert!(!single.contains("valve"));
        assert!(
            d.contains("width=1280,height=720,framerate=30/1,format=I420"),
            "{d}"
        );
        assert!(d.contains("stream-format=byte-stream,alignment=au"));
    }

    #[test]
    fn on_the_pi_each_layer_is_a_hardware_encoder_session_of_its_own() {
        let v = video(SourceKind::Libcamera, SourceFormat::Auto);
        let p = VideoParams::from_config(&v);
        let d = pipeline_description(&v, &p, Some("v4l2h264enc"));
        assert!(d.contains("v4l2h264enc name=encoder0"), "{d}");
        assert!(d.contains("v4l2h264enc name=encoder1"), "{d}");
        assert!(d.contains("video_bitrate=400000"), "{d}");
        assert!(d.contains("appsink name=sink1"), "{d}");
    }

    #[test]
    fn the_own_part_of_a_user_pipeline_is_what_follows_it() {
        let v = video(SourceKind::Pipeline, SourceFormat::Raw);
        let p = VideoParams::from_config(&v);
        let own = own_description(&v, &p, Some("x264enc"));
        assert!(own.starts_with("videoconvert ! "), "{own}");
        assert!(!own.contains("videotestsrc"), "{own}");
        assert_eq!(
            pipeline_description(&v, &p, Some("x264enc")),
            format!("videotestsrc ! video/x-raw ! {own}")
        );
        let test = video(SourceKind::Test, SourceFormat::Auto);
        assert_eq!(
            own_description(&test, &p, Some("x264enc")),
            pipeline_description(&test, &p, Some("x264enc"))
        );
    }

    #[test]
    fn every_description_parses_in_gstreamer() {
        gstreamer::init().unwrap();
        let p = VideoParams::from_config(&VideoConfig::default());
        for p in [p.clone(), p.top_only()] {
            for (kind, format) in [
                (SourceKind::Test, SourceFormat::Auto),
                (SourceKind::V4l2, SourceFormat::Raw),
                (SourceKind::V4l2, SourceFormat::Mjpeg),
                (SourceKind::V4l2, SourceFormat::H264),
                (SourceKind::V4l2, SourceFormat::Auto),
            ] {
                let d = pipeline_description(&video(kind, format), &p, Some("x264enc"));
                gstreamer::parse::launch(&d).unwrap_or_else(|e| panic!("{d}: {e}"));
            }
        }
    }
}
