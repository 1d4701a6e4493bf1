//! systemd integration: readiness, the watchdog, reload and stop
//! notifications (`Type=notify`, `WatchdogSec=`). Outside systemd (no
//! `NOTIFY_SOCKET`) every call is a no-op.
//!
//! Owns: the notifications to systemd. Must not touch: the daemon's decisions
//! (it only reports them).

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Service {
    /// Ping interval: half the watchdog timeout systemd gave us.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    ready: bool,
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}

impl Service {
    pub fn from_env() -> Self {
        let mut usec = 0;
        let ping_every = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(100)));
        Self {
            ping_every,
            last_ping: None,
            ready: false,
        }
    }

    /// Start-up is complete (broker connected, pipeline playing); once.
    pub fn ready(&mut self) {
        if !self.ready {
            self.ready = true;
            notify(&[NotifyState::Ready, NotifyState::Status("streaming")]);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Pings the watchdog if it is due. Call only while healthy.
    pub fn keep_alive(&mut self, now: Instant) {
        let Some(every) = self.ping_every else {
            return;
        };
        if self.last_ping.is_none_or(|at| now >= at + every) {
            self.last_ping = Some(now);
            notify(&[NotifyState::Watchdog]);
        }
    }

    pub fn reloading(&self) {
        notify(&[
            NotifyState::Reloading,
            NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading")),
        ]);
    }

    pub fn reloaded(&self) {
        notify(&[NotifyState::Ready, NotifyState::Status("streaming")]);
    }

    pub fn stopping(&self) {
        notify(&[NotifyState::Stopping]);
    }
}
