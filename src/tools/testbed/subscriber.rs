//! An MQTT client that follows a few topics on a background thread: what
//! the benchmark's, the soak's and the integration tests' observers share.

use std::time::Duration;

/// Connects with `options` (packets up to the protocol's limit), subscribes
/// to `filters` and hands every incoming message to `sink` on a background
/// thread, until `sink` returns false. A lost connection is retried.
pub fn subscribe(
    mut options: rumqttc::MqttOptions,
    filters: &[&str],
    mut sink: impl FnMut(rumqttc::Publish) -> bool + Send + 'static,
) -> Result<rumqttc::Client, rumqttc::ClientError> {
    options.set_max_packet_size(crate::protocol::MAX_PACKET, crate::protocol::MAX_PACKET);
    let (client, mut connection) = rumqttc::Client::new(options, 64);
    for filter in filters {
        client.subscribe(*filter, rumqttc::QoS::AtLeastOnce)?;
    }
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if !sink(p) {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    Ok(client)
}
