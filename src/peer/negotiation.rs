//! The negotiation of one connection, as a rule: the supervisor's commands
//! and our gathered candidates in, steps out. Both ways of running a
//! connection (a task per connection, [`crate::peer`], and the send loop,
//! [`crate::peer::send_loop`]) carry out the same steps.
//!
//! Three things are decided here:
//! - our candidates wait until the other side can use them: an offerer's
//!   until its answer is applied, an answerer's until its answer is out
//!   (a candidate that arrives before the description is refused by
//!   browsers and by the core alike);
//! - an answer from a *new* remote connection (a viewer that rebuilt its
//!   own) cannot be taken, since DTLS runs once per connection: the
//!   connection is [`Step::Replaced`];
//! - an answer that cannot receive our H.264 is [`Step::Incompatible`],
//!   named, instead of a black tile.

use crate::peer::PeerCommand;
use crate::peer::answer::{self, RemoteIdentity};
use crate::protocol::Candidate;

/// What the connection does for a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Apply the remote offer and signal our answer, then
    /// [`Negotiation::applied`].
    Answer(String),
    /// Apply the remote answer, then [`Negotiation::applied`].
    Accept(String),
    /// Add the remote side's candidate.
    AddRemote(Candidate),
    /// Signal an offer with fresh ICE credentials.
    RestartIce,
    /// Signal a new offer on the running connection (its media changed).
    Offer,
    /// The answer cannot receive our video; the reason says why.
    Incompatible(String),
    /// The answer comes from a new remote connection.
    Replaced,
    /// Nothing to do.
    Nothing,
}

/// One connection's negotiation state.
#[derive(Debug)]
pub struct Negotiation {
    offerer: bool,
    sends_video: bool,
    /// Whether the other side may have our candidates now.
    released: bool,
    /// Our candidates gathered before that (`None` ends them).
    held: Vec<Option<Candidate>>,
    /// Who the applied remote description came from.
    remote: Option<RemoteIdentity>,
}

impl Negotiation {
    /// `sends_video`: the connection sends the camera's video, so an answer
    /// must receive H.264.
    pub fn new(offerer: bool, sends_video: bool) -> Self {
        Self {
            offerer,
            sends_video,
            released: false,
            held: Vec::new(),
            remote: None,
        }
    }

    /// What to do for a supervisor's command.
    pub fn command(&mut self, command: PeerCommand) -> Step {
        match command {
            PeerCommand::ApplyOffer(sdp) => Step::Answer(sdp),
            PeerCommand::ApplyAnswer(sdp) => {
                if self.sends_video
                    && let Err(reason) = answer::accepts_video(&sdp)
                {
                    return Step::Incompatible(reason);
                }
                match &self.remote {
                    Some(remote) if *remote != RemoteIdentity::of(&sdp) => Step::Replaced,
                    _ => Step::Accept(sdp),
                }
            }
            PeerCommand::AddCandidate(Some(candidate)) => Step::AddRemote(candidate),
            PeerCommand::AddCandidate(None) => Step::Nothing,
            PeerCommand::RestartIce if self.offerer => {
                self.released = false;
                Step::RestartIce
            }
            PeerCommand::RestartIce => Step::Nothing,
            // A granted talker's sound needs the answer to a new offer.
            PeerCommand::Talk(true) if self.offerer => Step::Offer,
            PeerCommand::Talk(_) => Step::Nothing,
        }
    }

    /// The remote description `sdp` (of an [`Step::Answer`] or
    /// [`Step::Accept`]) is applied, and our answer, if any, is out: the
    /// candidates held so far go to the other side, in order.
    pub fn applied(&mut self, sdp: &str) -> Vec<Option<Candidate>> {
        self.remote = Some(RemoteIdentity::of(sdp));
        self.released = true;
        std::mem::take(&mut self.held)
    }

    /// One of our candidates (`None`: the last one): `Some` to signal it
    /// now, `None` while it waits.
    pub fn gathered(&mut self, candidate: Option<Candidate>) -> Option<Option<Candidate>> {
        if self.released {
            Some(candidate)
        } else {
            self.held.push(candidate);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\n\
        a=fingerprint:sha-256 AA:BB\r\n\
        a=ice-ufrag:abcd\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
        a=recvonly\r\n\
        a=rtpmap:102 H264/90000\r\n";

    fn candidate(n: u8) -> Candidate {
        Candidate {
            candidate: format!("candidate:{n} 1 udp 1 10.0.0.{n} 5000 typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        }
    }

    #[test]
    fn an_offerers_candidates_wait_for_the_answer_and_keep_their_order() {
        let mut n = Negotiation::new(true, true);
        assert_eq!(n.gathered(Some(candidate(1))), None);
        assert_eq!(n.gathered(Some(candidate(2))), None);
        assert_eq!(n.gathered(None), None);
        assert_eq!(
            n.command(PeerCommand::ApplyAnswer(ANSWER.into())),
            Step::Accept(ANSWER.into())
        );
        assert_eq!(
            n.applied(ANSWER),
            vec![Some(candidate(1)), Some(candidate(2)), None]
        );
        assert_eq!(n.gathered(Some(candidate(3))), Some(Some(candidate(3))));
    }

    #[test]
    fn an_answerers_candidates_go_once_its_answer_is_out() {
        let mut n = Negotiation::new(false, true);
        assert_eq!(n.gathered(Some(candidate(1))), None);
        assert_eq!(
            n.command(PeerCommand::ApplyOffer(ANSWER.into())),
            Step::Answer(ANSWER.into())
        );
        assert_eq!(n.applied(ANSWER), vec![Some(candidate(1))]);
    }

    #[test]
    fn an_answer_that_cannot_receive_h264_is_incompatible() {
        let mut n = Negotiation::new(true, true);
        let vp8 = ANSWER.replace("H264", "VP8");
        assert!(matches!(
            n.command(PeerCommand::ApplyAnswer(vp8.clone())),
            Step::Incompatible(reason) if reason.contains("VP8")
        ));
        // A receiving connection takes whatever it is sent.
        let mut receiving = Negotiation::new(true, false);
        assert_eq!(
            receiving.command(PeerCommand::ApplyAnswer(vp8.clone())),
            Step::Accept(vp8)
        );
    }

    #[test]
    fn an_answer_from_a_new_remote_connection_is_replaced() {
        let mut n = Negotiation::new(true, true);
        n.command(PeerCommand::ApplyAnswer(ANSWER.into()));
        n.applied(ANSWER);
        // The same connection answering again (an ICE restart) is taken.
        let restarted = ANSWER.replace("abcd", "efgh");
        assert_eq!(
            n.command(PeerCommand::ApplyAnswer(restarted.clone())),
            Step::Accept(restarted)
        );
        let rebuilt = ANSWER.replace("AA:BB", "CC:DD");
        assert_eq!(n.command(PeerCommand::ApplyAnswer(rebuilt)), Step::Replaced);
    }

    #[test]
    fn an_ice_restart_is_the_offerers_and_holds_the_new_candidates() {
        let mut answerer = Negotiation::new(false, true);
        assert_eq!(answerer.command(PeerCommand::RestartIce), Step::Nothing);

        let mut n = Negotiation::new(true, true);
        n.command(PeerCommand::ApplyAnswer(ANSWER.into()));
        n.applied(ANSWER);
        assert_eq!(n.command(PeerCommand::RestartIce), Step::RestartIce);
        assert_eq!(n.gathered(Some(candidate(4))), None);
        n.command(PeerCommand::ApplyAnswer(ANSWER.into()));
        assert_eq!(n.applied(ANSWER), vec![Some(candidate(4))]);
    }

    #[test]
    fn a_granted_talker_gets_a_new_offer_from_the_offerer_only() {
        let mut n = Negotiation::new(true, true);
        assert_eq!(n.command(PeerCommand::Talk(true)), Step::Offer);
        assert_eq!(n.command(PeerCommand::Talk(false)), Step::Nothing);
        let mut answerer = Negotiation::new(false, true);
        assert_eq!(answerer.command(PeerCommand::Talk(true)), Step::Nothing);
        // A new offer is no restart: candidates already out stay out.
        n.command(PeerCommand::ApplyAnswer(ANSWER.into()));
        n.applied(ANSWER);
        n.command(PeerCommand::Talk(true));
        assert_eq!(n.gathered(Some(candidate(7))), Some(Some(candidate(7))));
    }

    #[test]
    fn remote_candidates_are_added_and_their_end_needs_nothing() {
        let mut n = Negotiation::new(true, true);
        assert_eq!(
            n.command(PeerCommand::AddCandidate(Some(candidate(5)))),
            Step::AddRemote(candidate(5))
        );
        assert_eq!(n.command(PeerCommand::AddCandidate(None)), Step::Nothing);
    }
}
