//! The shipped unit file: `systemd-analyze verify` accepts it, and
//! `systemd-analyze security` rates its exposure at 2.0 or better.

mod common;

use std::process::Command;

/// The unit with ExecStart pointing at the binary under test.
fn unit_under_test() -> (common::TempDir, std::path::PathBuf) {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/meshcam.service"
    ))
    .unwrap()
    .replace("/usr/bin/meshcam", common::BIN);
    let dir = common::temp_dir("unit");
    let path = dir.join("meshcam.service");
    std::fs::write(&path, unit).unwrap();
    (dir, path)
}

#[test]
fn the_unit_verifies_and_its_exposure_is_at_most_2() {
    let (_dir, unit) = unit_under_test();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for meshcam.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{text}");
}
