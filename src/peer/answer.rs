//! Checks a viewer's answer before it is applied: a browser that cannot
//! decode H.264 answers with its video rejected or without H.264, connects,
//! and shows nothing. Naming the cause beats a silent black tile and endless
//! offers.

/// `Ok` when the answer accepts H.264 video; otherwise why not, for the log
/// and the `bye` reason.
pub fn accepts_h264(sdp: &str) -> Result<(), String> {
    let mut lines = sdp.lines().map(str::trim_end);
    let Some(m_line) = lines.by_ref().find(|l| l.starts_with("m=video ")) else {
        return Err("no H.264: the answer has no video section".into());
    };
    if m_line.split_whitespace().nth(1) == Some("0") {
        return Err("no H.264: the answer rejects the video".into());
    }
    let codecs: Vec<&str> = lines
        .take_while(|l| !l.starts_with("m="))
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|encoding| encoding.split('/').next())
        .collect();
    if codecs.iter().any(|c| c.eq_ignore_ascii_case("H264")) {
        Ok(())
    } else if codecs.is_empty() {
        Err("no H.264: the answer lists no video codec".into())
    } else {
        Err(format!(
            "no H.264: the viewer decodes only {}",
            codec_list(&codecs)
        ))
    }
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
             a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n"
        );
        assert_eq!(accepts_h264(&sdp), Ok(()));
    }

    #[test]
    fn an_answer_without_h264_names_what_the_viewer_has() {
        let sdp = format!(
            "{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 96 98\r\na=rtpmap:96 VP8/90000\r\n\
             a=rtpmap:98 VP9/90000\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 H264/90000\r\n"
        );
        assert_eq!(
            accepts_h264(&sdp),
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
            accepts_h264(&sdp),
            Err("no H.264: the viewer decodes only VP8, rtx, VP9".into())
        );

        let mut many = format!("{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 96\r\n");
        for pt in 0..20 {
            many.push_str(&format!(
                "a=rtpmap:{pt} C{pt}{}/90000\r\n",
                "x".repeat(5000)
            ));
        }
        let reason = accepts_h264(&many).unwrap_err();
        assert!(reason.ends_with(" and 12 more"), "{reason}");
        assert!(reason.len() < 400, "{} bytes", reason.len());
    }

    #[test]
    fn rejected_or_missing_video_is_refused() {
        let rejected = format!("{HEAD}m=video 0 UDP/TLS/RTP/SAVPF 102\r\n");
        assert!(accepts_h264(&rejected).unwrap_err().contains("rejects"));
        let none = format!("{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
        assert!(
            accepts_h264(&none)
                .unwrap_err()
                .contains("no video section")
        );
        let bare = format!("{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 102\r\n");
        assert!(accepts_h264(&bare).unwrap_err().contains("no video codec"));
    }
}
