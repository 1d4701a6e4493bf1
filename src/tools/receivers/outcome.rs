//! What each receiver got over a measured window, and the table the
//! benchmark and the soak print of it: one row per receiver, so a kind
//! that fares worse than the others shows by name.

use std::time::{Duration, Instant};

use super::tally::Count;
use super::{Kind, Receivers, fps};

/// One receiver's figures.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub kind: Kind,
    /// Frames per second over the window.
    pub fps: f64,
    /// The longest wait between two frames over the window.
    pub longest_gap: Duration,
    /// Offers after its first, since it joined.
    pub reoffers: u64,
    /// Frames the camera dropped for it since it joined.
    pub drops: u64,
    pub first_frame_ms: Option<f64>,
}

/// Frame counts of every receiver at the start of a window.
pub struct Mark {
    at: Instant,
    counts: Vec<Count>,
}

impl Receivers {
    /// Starts a window: frame counts now, and the longest gaps reset.
    pub fn mark(&mut self) -> Mark {
        let counts = self
            .tallies_mut()
            .map(|(_, (_, tally))| {
                tally.take_gap();
                tally.count()
            })
            .collect();
        Mark {
            at: Instant::now(),
            counts,
        }
    }

    /// Ends the window `since` started: each receiver's outcome, its drops
    /// from `drops` (what the camera dropped for it since it joined).
    pub fn outcomes(&mut self, since: &Mark, drops: impl Fn(&str) -> u64) -> Vec<Outcome> {
        let now = Instant::now();
        self.tallies_mut()
            .zip(&since.counts)
            .map(|((id, (kind, tally)), &before)| Outcome {
                id: id.clone(),
                kind: *kind,
                fps: fps(before, tally.count(), since.at, now),
                longest_gap: tally.take_gap(),
                reoffers: tally.reoffers(),
                drops: drops(id),
                first_frame_ms: tally.first_frame_ms(),
            })
            .collect()
    }
}

/// The slowest receiver's frame rate.
pub fn slowest(outcomes: &[Outcome]) -> Option<f64> {
    outcomes.iter().map(|o| o.fps).reduce(f64::min)
}

pub fn print_table(outcomes: &[Outcome]) {
    println!(
        "| receiver | kind | fps | longest gap ms | re-offers | camera drops | join→first frame ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for o in outcomes {
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {} |",
            o.id,
            o.kind.name(),
            o.fps,
            o.longest_gap.as_millis(),
            o.reoffers,
            o.drops,
            o.first_frame_ms
                .map(|ms| format!("{ms:.0}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
}
