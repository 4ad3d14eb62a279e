//! Ingest from an external MQTT broker (Mosquitto, say) instead of the embedded server.
//! The hub subscribes to `hearth/#` at QoS 1 with a persistent session and manual acks: a
//! message is acknowledged to the broker only after its readings are committed, so the
//! broker keeps (and redelivers) anything the hub had not stored.
//!
//! The broker authenticates devices and must enforce that each device writes only under
//! its own id (Mosquitto: `pattern write hearth/%u/#` in the ACL file); the hub trusts the
//! topic's device id, and checks that the device exists here.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use super::Rejections;
use super::mqtt::readings_from_publish;
use super::pipeline::Ingest;
use crate::config::ExternalMqtt;
use crate::store::Store;

/// The client for the external broker: the caller keeps a clone to publish commands, and
/// hands the event loop to [`run`]. Nothing connects until `run` polls it.
pub fn client(config: &ExternalMqtt) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(super::decode::MAX_PAYLOAD + 1024, super::decode::MAX_PAYLOAD + 1024);
    if let Some(username) = &config.username {
        options.set_credentials(
            username.clone(),
            config.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default(),
        );
    }
    AsyncClient::new(options, 256)
}

/// Runs until `shutdown`: connects, subscribes, ingests; on errors waits and reconnects.
pub async fn run(
    config: ExternalMqtt,
    (client, mut events): (AsyncClient, EventLoop),
    store: Store,
    ingest: Ingest,
    rejections: Rejections,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(250);
                tracing::info!(host = %config.host, port = config.port, "connected to external MQTT broker");
                if let Err(error) = client.try_subscribe("hearth/#", QoS::AtLeastOnce) {
                    tracing::error!(%error, "could not subscribe on the external broker");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let device = publish.topic.split('/').nth(1).unwrap_or_default().to_owned();
                let now = ingest.now_ms();
                let known =
                    crate::reading::valid_device_id(&device) && store.device_exists(&device).await.unwrap_or(false);
                let readings = if known {
                    readings_from_publish(&device, &publish.topic, &publish.payload, now).map_err(|e| e.to_string())
                } else {
                    Err("unknown device".to_owned())
                };
                match readings {
                    Err(reason) => {
                        rejections.record(&device, "mqtt-external", &reason, now);
                        let _ = client.try_ack(&publish);
                    }
                    Ok(readings) => match ingest.submit_acked(readings).await {
                        Ok(receipt) => {
                            let client = client.clone();
                            tokio::spawn(async move {
                                if let Ok(Ok(())) = receipt.await {
                                    let _ = client.ack(&publish).await;
                                }
                            });
                        }
                        Err(_) => break,
                    },
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "external MQTT broker connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    let _ = client.try_disconnect();
}
