//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, see docs/FUZZING.md) as
//! regression tests on stable: every file goes through the same checks as
//! in its `cargo fuzz` target, shared through `fuzz/targets.rs`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../fuzz/targets.rs"]
mod targets;

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every corpus file of `target` through its checks and names every
/// file that fails, not just the first.
fn replay(target: &str) {
    let (_, check) = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let files = corpus_files(target);
    assert!(!files.is_empty(), "the {target} corpus is empty");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a readable corpus file");
            catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} corpus files fail: {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn every_target_has_a_replay_test() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "presence",
            "signal",
            "command",
            "status",
            "answer_sdp",
            "topic"
        ]
    );
}

#[test]
fn presence_corpus() {
    replay("presence");
}

#[test]
fn signal_corpus() {
    replay("signal");
}

#[test]
fn command_corpus() {
    replay("command");
}

#[test]
fn status_corpus() {
    replay("status");
}

#[test]
fn answer_sdp_corpus() {
    replay("answer_sdp");
}

#[test]
fn topic_corpus() {
    replay("topic");
}
