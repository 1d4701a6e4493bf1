//! `MESHCAM_*` environment variables as a configuration layer.
//!
//! Only variables that name a configuration key are read
//! (`MESHCAM_VIDEO__WIDTH` is `video.width`). Any other `MESHCAM_*` variable
//! — a script's own, a leftover `Environment=` of a unit, a typo — is named
//! in one warning and ignored: a stray variable must not stop a camera.
//! Unknown keys in the TOML file stay errors; that file is the camera's own.

use std::collections::HashMap;

use serde_json::Value;

/// What every variable of this layer starts with.
pub const PREFIX: &str = "MESHCAM_";
/// Between a section and its key: `MESHCAM_VIDEO__WIDTH`.
pub const SEPARATOR: &str = "__";

/// Documented spellings that are not `SECTION__KEY`, and the key they set.
const ALIASES: &[(&str, &str)] = &[("MESHCAM_DEVICE_ID", "MESHCAM_DEVICE__ID")];

/// Variables of the project's scripts, not of the daemon: set in a shell
/// that also starts the daemon, they are no mistake and not warned about.
const SCRIPT_VARIABLES: &[&str] = &["MESHCAM_EXTRA_PACKAGES", "MESHCAM_BIN"];

/// The environment split into what configures and what is ignored.
#[derive(Debug, Default, PartialEq)]
pub struct EnvironmentLayer {
    /// Variables that name a key, aliases already spelled as keys.
    pub known: HashMap<String, String>,
    /// `MESHCAM_*` variables that name no key, sorted.
    pub unknown: Vec<String>,
}

impl EnvironmentLayer {
    /// Splits `vars` by the keys of `defaults` (the default configuration
    /// as JSON: every key is there, unset options as `null`).
    pub fn split(vars: impl IntoIterator<Item = (String, String)>, defaults: &Value) -> Self {
        let mut layer = Self::default();
        let mut aliased = Vec::new();
        for (name, value) in vars {
            if !name.starts_with(PREFIX) || SCRIPT_VARIABLES.contains(&name.as_str()) {
                continue;
            }
            if let Some((_, key)) = ALIASES.iter().find(|(alias, _)| *alias == name) {
                aliased.push(((*key).to_owned(), value));
            } else if names_a_key(&name, defaults) {
                layer.known.insert(name, value);
            } else {
                layer.unknown.push(name);
            }
        }
        // The key's own spelling wins over an alias.
        for (key, value) in aliased {
            layer.known.entry(key).or_insert(value);
        }
        layer.unknown.sort();
        layer
    }
}

/// Whether `MESHCAM_A__B` names the value at `a.b` of `defaults`.
fn names_a_key(name: &str, defaults: &Value) -> bool {
    let path = name[PREFIX.len()..].to_lowercase();
    let mut node = defaults;
    for segment in path.split(SEPARATOR) {
        match node.get(segment) {
            Some(child) => node = child,
            None => return false,
        }
    }
    !node.is_object()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn defaults() -> Value {
        serde_json::json!({
            "device": {"id": "", "name": ""},
            "mqtt": {"url": "embedded", "username": null},
            "rooms": [],
            "stats_interval_s": 10,
        })
    }

    #[test]
    fn keys_are_read_and_strays_are_named() {
        let layer = EnvironmentLayer::split(
            vars(&[
                ("MESHCAM_MQTT__URL", "mqtt://b"),
                ("MESHCAM_MQTT__USERNAME", "cam"),
                ("MESHCAM_ROOMS", "a,b"),
                ("MESHCAM_STATS_INTERVAL_S", "5"),
                ("MESHCAM_MQTT__NOPE", "1"),
                ("MESHCAM_HELPER_FLAG", "1"),
                ("MESHCAM_DEVICE", "whole-section"),
                ("PATH", "/bin"),
            ]),
            &defaults(),
        );
        let mut known: Vec<_> = layer.known.keys().cloned().collect();
        known.sort();
        assert_eq!(
            known,
            [
                "MESHCAM_MQTT__URL",
                "MESHCAM_MQTT__USERNAME",
                "MESHCAM_ROOMS",
                "MESHCAM_STATS_INTERVAL_S"
            ]
        );
        assert_eq!(
            layer.unknown,
            [
                "MESHCAM_DEVICE",
                "MESHCAM_HELPER_FLAG",
                "MESHCAM_MQTT__NOPE"
            ]
        );
    }

    #[test]
    fn the_documented_device_id_variable_sets_the_device_id() {
        let layer = EnvironmentLayer::split(vars(&[("MESHCAM_DEVICE_ID", "kitchen")]), &defaults());
        assert_eq!(layer.known["MESHCAM_DEVICE__ID"], "kitchen");
        assert!(layer.unknown.is_empty());
        // The key's own spelling wins, whatever the order.
        for order in [
            [
                ("MESHCAM_DEVICE_ID", "alias"),
                ("MESHCAM_DEVICE__ID", "key"),
            ],
            [
                ("MESHCAM_DEVICE__ID", "key"),
                ("MESHCAM_DEVICE_ID", "alias"),
            ],
        ] {
            let layer = EnvironmentLayer::split(vars(&order), &defaults());
            assert_eq!(layer.known["MESHCAM_DEVICE__ID"], "key");
        }
    }

    #[test]
    fn the_scripts_own_variables_are_neither_read_nor_warned_about() {
        let layer = EnvironmentLayer::split(
            vars(&[("MESHCAM_EXTRA_PACKAGES", "vim"), ("MESHCAM_BIN", "/x")]),
            &defaults(),
        );
        assert_eq!(layer, EnvironmentLayer::default());
    }
}
