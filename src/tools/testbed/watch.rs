//! The latest JSON message on each of a few topics, kept by a background
//! MQTT client: how the benchmark and the soak follow the camera's status
//! and telemetry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use super::Mosquitto;

pub struct TopicWatch {
    latest: Arc<Mutex<HashMap<String, Value>>>,
    pub client: rumqttc::Client,
}

impl TopicWatch {
    pub fn connect(broker: &Mosquitto, topics: &[String]) -> anyhow::Result<Self> {
        let options = rumqttc::MqttOptions::new(
            format!("watch-{}", &crate::protocol::ids::new_session()[..6]),
            "127.0.0.1",
            broker.port,
        );
        let latest = Arc::new(Mutex::new(HashMap::new()));
        let sink = latest.clone();
        let filters: Vec<&str> = topics.iter().map(String::as_str).collect();
        let client = super::subscribe(options, &filters, move |p| {
            if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                sink.lock().expect("watch lock").insert(p.topic, v);
            }
            true
        })?;
        Ok(Self { latest, client })
    }

    /// The latest message on `topic`.
    pub fn latest(&self, topic: &str) -> Option<Value> {
        self.latest.lock().expect("watch lock").get(topic).cloned()
    }

    /// Waits until the latest message on `topic` satisfies `pred`.
    pub fn wait(
        &self,
        topic: &str,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(v) = self.latest(topic).filter(&pred) {
                return Ok(v);
            }
            if Instant::now() > end {
                bail!("{topic} never showed {what} within {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
