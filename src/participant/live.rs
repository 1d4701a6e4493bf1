//! The participant's effects carried out for real: publishes and
//! subscriptions on the broker session, peer connections spawned from the
//! factory.
//!
//! Owns the running peer connections' handles, keyed by link. Must not
//! decide anything: every effect arrives decided, and is carried out
//! without waiting (publishes are queued, peers are commanded over
//! channels).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Effect, Effects};
use crate::mqtt::MqttLink;
use crate::peer::{self, Outgoing, PeerEvent, PeerFactory, PeerHandle, PeerSpec};
use crate::room::LinkId;

pub struct Live {
    mqtt: MqttLink,
    factory: Arc<PeerFactory>,
    /// What to send, for a camera.
    media: Option<Outgoing>,
    /// The layer every new viewer is held on, if any.
    pin: Option<usize>,
    peer_events: mpsc::UnboundedSender<PeerEvent>,
    peers: BTreeMap<LinkId, PeerHandle>,
}

impl Live {
    pub fn new(
        mqtt: MqttLink,
        factory: Arc<PeerFactory>,
        media: Option<Outgoing>,
        peer_events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Self {
        Self {
            mqtt,
            factory,
            media,
            pin: None,
            peer_events,
            peers: BTreeMap::new(),
        }
    }

    pub fn peer(&self, link: LinkId) -> Option<&PeerHandle> {
        self.peers.get(&link)
    }

    /// Holds every viewer, present and to come, on `layer`; `None` lets
    /// them adapt.
    pub fn pin_all(&mut self, layer: Option<usize>) {
        self.pin = layer;
        for peer in self.peers.values() {
            peer.pin(layer);
        }
    }
}

impl Effects for Live {
    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Publish {
                topic,
                payload,
                retain,
            } => {
                // A full queue is logged by the link itself.
                self.mqtt.publish(topic, payload, retain);
            }
            Effect::Subscribe { filters, token } => self.mqtt.subscribe(&filters, token),
            Effect::Unsubscribe { filter } => self.mqtt.unsubscribe(&filter),
            Effect::OpenPeer { link, offerer } => {
                let spec = PeerSpec {
                    link,
                    offerer,
                    media: self.media.clone(),
                    pin: self.pin,
                    ice_servers: Vec::new(),
                };
                let handle = peer::spawn(self.factory.clone(), spec, self.peer_events.clone());
                self.peers.insert(link, handle);
            }
            Effect::Command { link, command } => {
                if let Some(handle) = self.peers.get(&link) {
                    handle.send(command);
                }
            }
            Effect::ClosePeer { link } => {
                if let Some(handle) = self.peers.remove(&link) {
                    handle.close();
                }
            }
        }
    }
}

/// Sleeps until `deadline` (a [`super::Participant::next_deadline`]); for
/// ever without one. The caller's loop then ticks the participant.
pub async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
