//! Reads a viewer's answer before it is applied.
//!
//! A browser that cannot decode H.264 answers with its video rejected or
//! without H.264, connects, and shows nothing; one that will not receive
//! answers `inactive`. Naming the cause beats a silent black tile and endless
//! offers. And an answer from a *new* remote peer connection (a viewer that
//! rebuilt its own) carries a new DTLS identity, which a running connection
//! cannot take: [`RemoteIdentity`] tells it apart.

/// `Ok` when the answer receives H.264 video, as the answer to our
/// send-only offer must (`recvonly`); otherwise why not, for the log and the
/// `bye` reason.
pub fn accepts_video(sdp: &str) -> Result<(), String> {
    let mut lines = sdp.lines().map(str::trim_end);
    let Some(m_line) = lines.by_ref().find(|l| l.starts_with("m=video ")) else {
        return Err("no H.264: the answer has no video section".into());
    };
    if m_line.split_whitespace().nth(1) == Some("0") {
        return Err("no H.264: the answer rejects the video".into());
    }
    let section: Vec<&str> = lines.take_while(|l| !l.starts_with("m=")).collect();
    let codecs: Vec<&str> = section
        .iter()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|encoding| encoding.split('/').next())
        .collect();
    if codecs.iter().any(|c| c.eq_ignore_ascii_case("H264")) {
        receives(&section)
    } else if codecs.is_empty() {
        Err("no H.264: the answer lists no video codec".into())
    } else {
        Err(format!(
            "no H.264: the viewer decodes only {}",
            codec_list(&codecs)
        ))
    }
}

/// The direction of the video section: the answer to a send-only offer
/// receives (`recvonly`); no attribute means `sendrecv`.
fn receives(section: &[&str]) -> Result<(), String> {
    let direction = section
        .iter()
        .find_map(|l| {
            ["a=recvonly", "a=sendrecv", "a=sendonly", "a=inactive"]
                .into_iter()
                .find(|d| l == d)
        })
        .unwrap_or("a=sendrecv");
    if direction == "a=recvonly" {
        return Ok(());
    }
    Err(format!(
        "the answer's video is {}, not recvonly: the camera only sends",
        &direction[2..]
    ))
}

/// Who answers: the DTLS identity of the remote peer connection. Two
/// answers with different identities come from two different connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteIdentity {
    /// Every `a=fingerprint` value, in order, case folded.
    pub fingerprints: Vec<String>,
    /// The `a=setup` role it takes.
    pub setup: Option<String>,
}

impl RemoteIdentity {
    pub fn of(sdp: &str) -> Self {
        let mut fingerprints: Vec<String> = attribute(sdp, "a=fingerprint:").collect();
        fingerprints.dedup();
        Self {
            fingerprints,
            setup: attribute(sdp, "a=setup:").next(),
        }
    }
}

/// The values of an SDP attribute (`name` with its colon), case folded.
fn attribute<'a>(sdp: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    sdp.lines()
        .filter_map(move |l| l.trim_end().strip_prefix(name))
        .map(|v| v.trim().to_ascii_lowercase())
}

/// At most this many codec names, of at most this many characters each, go
/// into the reason: it travels back to the viewer in a `bye`, which must stay
/// small whatever the answer held (an answer near the 64 KiB payload limit
/// with one long codec name once made a `bye` over it).
const MAX_LISTED: usize = 8;
const MAX_NAME_CHARS: usize = 32;

/// The codecs the viewer named, each once, in its order, within the bounds.
fn codec_list(codecs: &[&str]) -> String {
    let mut names: Vec<String> = Vec::new();
    let mut more = 0;
    for codec in codecs {
        let name: String = codec.chars().take(MAX_NAME_CHARS).collect();
        if names.contains(&name) {
            continue;
        }
        if names.len() == MAX_LISTED {
            more += 1;
        } else {
            names.push(name);
        }
    }
    let mut list = names.join(", ");
    if more > 0 {
        list.push_str(&format!(" and {more} more"));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

    #[test]
    fn an_answer_with_h264_is_accepted() {
        let sdp = format!(
            "{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n\
             a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\na=recvonly\r\n"
        );
        assert_eq!(accepts_video(&sdp), Ok(()));
    }

    #[test]
    fn an_answer_without_h264_names_what_the_viewer_has() {
        let sdp = format!(
            "{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 96 98\r\na=rtpmap:96 VP8/90000\r\n\
             a=rtpmap:98 VP9/90000\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 H264/90000\r\n"
        );
        assert_eq!(
            accepts_video(&sdp),
            Err("no H.264: the viewer decodes only VP8, VP9".into())
        );
    }

    #[test]
    fn the_reason_lists_each_codec_once_and_stays_short() {
        let sdp = format!(
            "{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=rtpmap:96 VP8/90000\r\n\
             a=rtpmap:97 rtx/90000\r\na=rtpmap:98 VP9/90000\r\na=rtpmap:99 rtx/90000\r\n"
        );
        assert_eq!(
            accepts_video(&sdp),
            Err("no H.264: the viewer decodes only VP8, rtx, VP9".into())
        );

        let mut many = format!("{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 96\r\n");
        for pt in 0..20 {
            many.push_str(&format!(
                "a=rtpmap:{pt} C{pt}{}/90000\r\n",
                "x".repeat(5000)
            ));
        }
        let reason = accepts_video(&many).unwrap_err();
        assert!(reason.ends_with(" and 12 more"), "{reason}");
        assert!(reason.len() < 400, "{} bytes", reason.len());
    }

    #[test]
    fn an_answer_that_does_not_receive_is_refused() {
        let video = "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";
        for (direction, verdict) in [
            ("a=recvonly\r\n", Ok(())),
            (
                "a=inactive\r\n",
                Err("the answer's video is inactive, not recvonly: the camera only sends".into()),
            ),
            (
                "a=sendrecv\r\n",
                Err("the answer's video is sendrecv, not recvonly: the camera only sends".into()),
            ),
            (
                "",
                Err("the answer's video is sendrecv, not recvonly: the camera only sends".into()),
            ),
        ] {
            let sdp =
                format!("{HEAD}{video}{direction}m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=recvonly\r\n");
            assert_eq!(accepts_video(&sdp), verdict, "{direction:?}");
        }
    }

    #[test]
    fn a_new_remote_connection_has_a_new_identity() {
        let answer = |fingerprint: &str, setup: &str| {
            format!(
                "{HEAD}a=fingerprint:sha-256 {fingerprint}\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
                 a=ice-ufrag:u{fingerprint}\r\na=setup:{setup}\r\n\
                 a=fingerprint:sha-256 {fingerprint}\r\n"
            )
        };
        let first = RemoteIdentity::of(&answer("AA:BB", "active"));
        assert_eq!(first.fingerprints, ["sha-256 aa:bb"]);
        assert_eq!(first.setup.as_deref(), Some("active"));
        // The same connection answering an ICE restart: new credentials only.
        let restart = answer("AA:BB", "active").replace("a=ice-ufrag:uAA:BB", "a=ice-ufrag:x");
        assert_eq!(RemoteIdentity::of(&restart), first);
        assert_eq!(RemoteIdentity::of(&answer("aa:bb", "active")), first);
        assert_ne!(RemoteIdentity::of(&answer("CC:DD", "active")), first);
        assert_ne!(RemoteIdentity::of(&answer("AA:BB", "passive")), first);
    }

    #[test]
    fn rejected_or_missing_video_is_refused() {
        let rejected = format!("{HEAD}m=video 0 UDP/TLS/RTP/SAVPF 102\r\n");
        assert!(accepts_video(&rejected).unwrap_err().contains("rejects"));
        let none = format!("{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
        assert!(
            accepts_video(&none)
                .unwrap_err()
                .contains("no video section")
        );
        let bare = format!("{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 102\r\n");
        assert!(accepts_video(&bare).unwrap_err().contains("no video codec"));
    }
}
