//! The packages the pipelines need are the packages meshcam installs.
//!
//! For every element of `meshcam::media::elements::ELEMENTS` (which the unit
//! tests there hold to every description the code builds): the GStreamer
//! registry names the plugin file that provides it, dpkg names the package
//! that holds the file, and that package must be the table's, be in
//! `scripts/setup`'s list and in the `.deb`'s Depends (or Recommends, for an
//! element only some hardware has). And the daemon, on an installation
//! that lacks an element, exits with status 2 naming it and its package.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;
use meshcam::media::elements::{ELEMENTS, Element};
use meshcam::tools::testbed::CameraProcess;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The `packages=( … )` array of `scripts/setup`.
fn setup_packages() -> BTreeSet<String> {
    let script = repo_file("scripts/setup");
    let start = script
        .find("\npackages=(")
        .expect("scripts/setup has a packages=( … ) array");
    let body = &script[start + "\npackages=(".len()..];
    let end = body.find(')').expect("the packages array is closed");
    let packages: BTreeSet<String> = body[..end]
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect();
    assert!(
        packages.contains("mosquitto"),
        "the packages array of scripts/setup did not read right: {packages:?}"
    );
    packages
}

/// Package names of a Debian relation field: "a (>= 1), b | c" → a, b, c.
fn relation_names(field: &str) -> BTreeSet<String> {
    field
        .split([',', '|'])
        .filter_map(|p| p.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `depends` and `recommends` of Cargo.toml's `[package.metadata.deb]`.
fn deb_relations() -> (BTreeSet<String>, BTreeSet<String>) {
    let manifest = config::Config::builder()
        .add_source(config::File::from_str(
            &repo_file("Cargo.toml"),
            config::FileFormat::Toml,
        ))
        .build()
        .expect("Cargo.toml parses");
    let field = |key: &str| {
        manifest
            .get_string(&format!("package.metadata.deb.{key}"))
            .unwrap_or_default()
    };
    let depends = relation_names(&field("depends"));
    assert!(
        depends.contains("libc6"),
        "Cargo.toml's deb depends did not read right: {depends:?}"
    );
    (depends, relation_names(&field("recommends")))
}

/// The plugin file that provides an element factory, if GStreamer has it.
fn plugin_file(element: &str) -> Option<PathBuf> {
    gst::init().expect("GStreamer initialises");
    gst::Registry::get()
        .find_feature(element, gst::ElementFactory::static_type())?
        .plugin()?
        .filename()
}

/// The package that holds `file`, by `dpkg -S` (on the path the registry
/// gives, then on the resolved one: /lib is /usr/lib on merged systems).
fn package_of_file(file: &Path) -> Result<String, String> {
    let mut candidates = vec![file.to_owned()];
    if let Ok(resolved) = file.canonicalize()
        && resolved != file
    {
        candidates.push(resolved);
    }
    let mut errors = Vec::new();
    for path in &candidates {
        let out = Command::new("dpkg")
            .arg("-S")
            .arg(path)
            .output()
            .map_err(|e| format!("dpkg -S does not run: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // "gstreamer1.0-x:amd64: /usr/lib/…/libgstpango.so"
        let owner = stdout
            .lines()
            .find(|line| !line.starts_with("diversion "))
            .and_then(|line| line.rsplit_once(": "))
            .map(|(packages, _)| packages.split(", ").next().unwrap_or(packages));
        match owner {
            Some(owner) if out.status.success() => {
                return Ok(owner.split(':').next().unwrap_or(owner).to_owned());
            }
            _ => errors.push(format!(
                "dpkg -S {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }
    Err(errors.join("; "))
}

/// What is wrong with one element's packaging, if anything.
fn packaging_problems(
    e: &Element,
    setup: &BTreeSet<String>,
    depends: &BTreeSet<String>,
    recommends: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    match plugin_file(e.name) {
        None if e.hardware_only => {
            eprintln!(
                "{} is not installed here (only some hardware has it): {} not checked against dpkg",
                e.name, e.package
            );
        }
        None => problems.push(format!(
            "element {} is not in the GStreamer registry: its Debian package {} is not \
             installed (./scripts/setup installs it), or it is only on some hardware and \
             must be marked so in ELEMENTS",
            e.name, e.package
        )),
        Some(file) => match package_of_file(&file) {
            Ok(owner) if owner == e.package => {}
            Ok(owner) => problems.push(format!(
                "element {} comes from {} of the Debian package {owner}, but ELEMENTS says {}",
                e.name,
                file.display(),
                e.package
            )),
            Err(error) => problems.push(format!(
                "element {}: no package holds {}: {error}",
                e.name,
                file.display()
            )),
        },
    }
    if !setup.contains(e.package) {
        problems.push(format!(
            "the Debian package {} (element {}) is missing from the packages of scripts/setup",
            e.package, e.name
        ));
    }
    let in_deb = depends.contains(e.package) || (e.hardware_only && recommends.contains(e.package));
    if !in_deb {
        let field = if e.hardware_only {
            "depends or recommends"
        } else {
            "depends"
        };
        problems.push(format!(
            "the Debian package {} (element {}) is missing from Cargo.toml's \
             [package.metadata.deb] {field}",
            e.package, e.name
        ));
    }
    problems
}

#[test]
fn every_element_comes_from_a_package_that_setup_and_the_deb_install() {
    let setup = setup_packages();
    let (depends, recommends) = deb_relations();
    let problems: Vec<String> = ELEMENTS
        .iter()
        .flat_map(|e| packaging_problems(e, &setup, &depends, &recommends))
        .collect();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_packaging_check_catches_a_missing_package() {
    let setup = setup_packages();
    let (depends, recommends) = deb_relations();
    let clock = ELEMENTS.iter().find(|e| e.name == "clockoverlay").unwrap();
    let without = |set: &BTreeSet<String>| {
        let mut set = set.clone();
        set.remove(clock.package);
        set
    };
    let problems = packaging_problems(clock, &without(&setup), &without(&depends), &recommends);
    assert_eq!(
        problems,
        [
            "the Debian package gstreamer1.0-x (element clockoverlay) is missing from the \
             packages of scripts/setup",
            "the Debian package gstreamer1.0-x (element clockoverlay) is missing from \
             Cargo.toml's [package.metadata.deb] depends",
        ]
    );
    // An element that is not installed and not marked hardware-only fails.
    let absent = Element {
        name: "meshcamnosuchsrc",
        package: clock.package,
        hardware_only: false,
    };
    let problems = packaging_problems(&absent, &setup, &depends, &recommends);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("element meshcamnosuchsrc is not in the GStreamer registry"),
        "{problems:?}"
    );
    // One that is, may be recommended only, but not left out.
    let hardware = Element {
        hardware_only: true,
        ..absent
    };
    let mut recommended = recommends.clone();
    recommended.insert(clock.package.to_owned());
    assert!(packaging_problems(&hardware, &setup, &without(&depends), &recommended).is_empty());
    assert_eq!(
        packaging_problems(&hardware, &setup, &without(&depends), &recommends).len(),
        1
    );
}

/// A plugin directory with only the plugins of `ELEMENTS` that are
/// installed here, without the one that provides `left_out`.
fn plugins_without(left_out: &str) -> TempDir {
    let left_out_file = plugin_file(left_out).unwrap_or_else(|| {
        panic!("{left_out} is not installed here: run ./scripts/setup");
    });
    let dir = temp_dir(&format!("plugins-without-{left_out}"));
    let files: BTreeSet<PathBuf> = ELEMENTS
        .iter()
        .filter_map(|e| plugin_file(e.name))
        .filter(|file| *file != left_out_file)
        .collect();
    for file in &files {
        std::os::unix::fs::symlink(file, dir.join(file.file_name().unwrap())).unwrap();
    }
    dir
}

/// Starts the daemon on the test picture with GStreamer's plugins from
/// `plugin_dir` only (a fresh registry), and returns its exit status within
/// the deadline and its log.
fn daemon_with_plugins(id: &str, plugin_dir: &Path) -> (Option<i32>, String) {
    let broker = broker();
    let dir = temp_dir(id);
    let registry = dir.join("registry.bin");
    let mut camera = CameraProcess::spawn(
        Path::new(BIN),
        &broker.url(),
        id,
        "[video]\nsource = \"test\"\nencoder = \"auto\"\n",
        &dir,
        &[
            ("GST_PLUGIN_SYSTEM_PATH_1_0", plugin_dir.to_str().unwrap()),
            ("GST_PLUGIN_PATH_1_0", ""),
            ("GST_PLUGIN_PATH", ""),
            ("GST_REGISTRY_1_0", registry.to_str().unwrap()),
        ],
    )
    .expect("the meshcam binary runs");
    let status = wait_exit(&mut camera.child, DEADLINE);
    let log = camera.log();
    drop(camera);
    (
        status.map(|s| {
            s.code()
                .unwrap_or_else(|| panic!("killed: {s}; log:\n{log}"))
        }),
        log,
    )
}

#[test]
fn a_missing_element_stops_the_daemon_with_status_2_naming_its_package() {
    let plugins = plugins_without("clockoverlay");
    let (status, log) = daemon_with_plugins("cam-no-clockoverlay", &plugins);
    assert_eq!(status, Some(2), "exit status; log:\n{log}");
    // The start-up message is the interface: what to install, verbatim.
    assert!(
        log.lines().any(|line| line
            == "meshcam: element clockoverlay is missing: install the Debian package \
                gstreamer1.0-x (apt-get install gstreamer1.0-x)"),
        "log:\n{log}"
    );
}

#[test]
fn without_any_plugin_the_daemon_names_every_element_and_encoder() {
    let empty = temp_dir("plugins-none");
    let (status, log) = daemon_with_plugins("cam-no-plugins", &empty);
    assert_eq!(status, Some(2), "exit status; log:\n{log}");
    // The start-up message is the interface: every element and encoder
    // missing, each with its package, and the apt-get lines.
    for expected in [
        "videotestsrc (Debian package gstreamer1.0-plugins-base)",
        "clockoverlay (Debian package gstreamer1.0-x)",
        "h264parse (Debian package gstreamer1.0-plugins-bad)",
        "no H.264 encoder: none of v4l2h264enc",
        "x264enc (Debian package gstreamer1.0-plugins-ugly)",
        "openh264enc (Debian package gstreamer1.0-plugins-bad)",
        "(apt-get install gstreamer1.0-plugins-base libgstreamer1.0-0 gstreamer1.0-x \
         gstreamer1.0-plugins-bad)",
        "(apt-get install gstreamer1.0-plugins-ugly)",
    ] {
        assert!(
            log.contains(expected),
            "{expected:?} not in the log:\n{log}"
        );
    }
}
