//! The short soak: viewer churn of every kind (clean leaves, killed
//! viewers, ICE failures), then the camera's files, threads, tasks and
//! memory are back within `meshcam::tools::soak::BOUNDS`, with no panic. The
//! 1,000-cycle run is `meshcam soak`.

mod common;

use std::path::Path;

use meshcam::tools::soak::{SoakOptions, run};

#[test]
fn viewer_churn_leaves_nothing_behind() {
    let options = SoakOptions {
        cycles: 18,
        workers: 3,
        viewers_per_process: 2,
    };
    let report = run(Path::new(common::BIN), &options).expect("the soak runs");
    assert_eq!(report.cycles, [6, 6, 6], "every ending was exercised");
    assert_eq!(report.panics, 0);
    assert!(report.within_bounds, "{report:?}");
}
