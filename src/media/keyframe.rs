//! Key-frame requests, coalesced.
//!
//! A new viewer, a PLI or FIR from any viewer, and a viewer that fell behind
//! all ask for a key frame. Many viewers must not flood the encoder with
//! IDRs, so requests are merged: at most one goes to the encoder per
//! `min_interval`, and a request that arrives inside that window is served
//! right after it (never dropped, since the viewer that asked may have joined
//! just after the last key frame went out).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Asks for a key frame; cheap to clone and to call from any task.
#[derive(Clone, Debug, Default)]
pub struct KeyframeRequests {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    notify: Notify,
    requested: AtomicU64,
    forwarded: AtomicU64,
}

impl KeyframeRequests {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a key frame soon.
    pub fn request(&self) {
        self.inner.requested.fetch_add(1, Ordering::Relaxed);
        self.inner.notify.notify_one();
    }

    /// Requests made by viewers so far.
    pub fn requested(&self) -> u64 {
        self.inner.requested.load(Ordering::Relaxed)
    }

    /// Requests passed on to the encoder so far.
    pub fn forwarded(&self) -> u64 {
        self.inner.forwarded.load(Ordering::Relaxed)
    }

    /// Serves requests until the task is dropped: calls `force` at most once
    /// per `min_interval`.
    pub async fn serve(self, min_interval: Duration, force: impl Fn()) {
        loop {
            self.inner.notify.notified().await;
            force();
            self.inner.forwarded.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(min_interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_are_merged_and_late_requests_served() {
        let requests = KeyframeRequests::new();
        let forced = Arc::new(AtomicU64::new(0));
        let counter = forced.clone();
        let server = tokio::spawn(requests.clone().serve(Duration::from_millis(500), move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        for _ in 0..50 {
            requests.request();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(forced.load(Ordering::SeqCst), 1, "a burst is one key frame");
        requests.request();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(forced.load(Ordering::SeqCst), 1, "still inside the window");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(forced.load(Ordering::SeqCst), 2, "served after the window");
        assert_eq!(requests.requested(), 51);
        server.abort();
    }
}
