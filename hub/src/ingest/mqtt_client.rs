//! Ingest from an external MQTT broker (Mosquitto, say) instead of the embedded server.
//! The hub subscribes to `hearth/#` at QoS 1 with a persistent session and manual acks: a
//! message is acknowledged to the broker only after its readings are committed, so the
//! broker keeps (and redelivers) anything the hub had not stored.
//!
//! The broker authenticates devices and must enforce that each device writes only under
//! its own id (Mosquitto: `pattern write hearth/%u/#` in the ACL file); the hub trusts the
//! topic's device id, and checks that the device exists here.
//!
//! Bridges (Zigbee2MQTT already on this broker, say) are read the same way as on the
//! embedded server: the hub subscribes to every bridge's namespaces, and reads each message
//! for the bridge whose namespace it falls in. Who may publish there is the broker's to
//! enforce (docs/security.md has the ACL); commands for devices behind a bridge go out
//! through the broker on their convention's topics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio_util::sync::CancellationToken;

use tokio::sync::broadcast;

use super::Rejections;
use super::pipeline::{Ingest, Urgency};
use crate::bridges::Bridges;
use crate::config::ExternalMqtt;
use crate::conventions::hearth;
use crate::devices::DeviceEvent;
use crate::reading::Reading;
use crate::store::Store;

/// The client for the external broker: the caller keeps a clone to publish commands, and
/// hands the event loop to [`run`]. Nothing connects until `run` polls it.
pub fn client(config: &ExternalMqtt) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_keep_alive(Duration::from_secs(30));
    // A bridge's device list (Zigbee2MQTT's) is larger than any reading.
    options.set_max_packet_size(crate::bridges::MAX_BRIDGE_MESSAGE + 1024, super::decode::MAX_PAYLOAD + 1024);
    if let Some(username) = &config.username {
        options.set_credentials(
            username.clone(),
            config.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default(),
        );
    }
    AsyncClient::new(options, 256)
}

/// Retained commands whose rows are gone or that devices no longer ask for.
async fn prune(retained: &super::retained::Retained, bridges: &Bridges) -> Vec<super::retained::Kept> {
    retained.prune(|k| bridges.retains(k)).await.unwrap_or_else(|error| {
        tracing::warn!(%error, "could not check the retained MQTT commands");
        Vec::new()
    })
}

/// What the client needs from the rest of the hub.
pub struct ExternalContext {
    pub store: Store,
    pub ingest: Ingest,
    pub rejections: Rejections,
    pub bridges: Bridges,
    pub device_events: broadcast::Receiver<DeviceEvent>,
    /// The commands the hub sent retained, cleared there when their device is removed.
    pub retained: super::retained::Retained,
}

/// Runs until `shutdown`: connects, subscribes, ingests; on errors waits and reconnects.
pub async fn run(
    config: ExternalMqtt,
    (client, mut events): (AsyncClient, EventLoop),
    ctx: ExternalContext,
    shutdown: CancellationToken,
) {
    let ExternalContext { store, ingest, rejections, bridges, mut device_events, retained } = ctx;
    let mut every_minute = tokio::time::interval(super::mqtt::PRUNE_EVERY);
    // Clearing retained commands on the broker waits for room in the client's queue, which
    // this loop empties: it is done aside.
    let clear = |forgotten: Vec<super::retained::Kept>| {
        if !forgotten.is_empty() {
            let client = client.clone();
            tokio::spawn(async move { super::retained::clear_on_broker(&client, forgotten).await });
        }
    };
    let mut backoff = Duration::from_millis(250);
    // Messages stored-or-not-yet: with some outstanding the broker is streaming to us.
    let unacked = Arc::new(AtomicUsize::new(0));
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = events.poll() => event,
            // Retained commands no longer asked for, or whose rows went, are cleared on the
            // broker (a removal's and a shred's are cleared by the lifecycle at once).
            _ = every_minute.tick() => {
                clear(prune(&retained, &bridges).await);
                continue;
            }
            changed = device_events.recv() => {
                match changed {
                    // A bridge's new namespaces are subscribed to at once (subscribing again
                    // to one held already is harmless; ones taken away are no longer read).
                    Ok(DeviceEvent::NamespacesChanged(bridge)) => {
                        for namespace in bridges.namespaces_of(&bridge) {
                            let _ = client.try_subscribe(namespace, QoS::AtLeastOnce);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => clear(prune(&retained, &bridges).await),
                    _ => {}
                }
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(250);
                tracing::info!(host = %config.host, port = config.port, "connected to external MQTT broker");
                for filter in std::iter::once("hearth/#".to_owned()).chain(bridges.all_namespaces()) {
                    if let Err(error) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                        tracing::error!(%error, "could not subscribe on the external broker");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let now = ingest.now_ms();
                // Not acknowledged when it could not be read now: the broker sends it again
                // after a reconnect.
                let Some((device, readings)) = read(&store, &bridges, &client, &publish, now).await else { continue };
                match readings {
                    Ok(readings) if readings.is_empty() => {
                        let _ = client.try_ack(&publish);
                    }
                    Err(reason) => {
                        rejections.record(&device, "mqtt-external", &reason, now);
                        let _ = client.try_ack(&publish);
                    }
                    Ok(readings) => match ingest.submit_acked(readings, urgency(&unacked)).await {
                        Ok(receipt) => {
                            let client = client.clone();
                            let unacked = Arc::clone(&unacked);
                            unacked.fetch_add(1, Ordering::Relaxed);
                            tokio::spawn(async move {
                                if let Ok(Ok(())) = receipt.await {
                                    let _ = client.ack(&publish).await;
                                }
                                unacked.fetch_sub(1, Ordering::Relaxed);
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

/// How soon the broker needs its next acknowledgement: at once while others are owed (it
/// is streaming a burst to us), otherwise after gathering with other readings.
fn urgency(unacked: &AtomicUsize) -> Urgency {
    if unacked.load(Ordering::Relaxed) > 0 { Urgency::Waiting } else { Urgency::Quiet }
}

/// Reads a message from the broker: the device it is for, and its readings or why it was
/// refused. `None`: not for the hub, or not readable now (not to be acknowledged).
async fn read(
    store: &Store,
    bridges: &Bridges,
    client: &AsyncClient,
    publish: &Publish,
    now: i64,
) -> Option<(String, Result<Vec<Reading>, String>)> {
    if publish.topic.starts_with("hearth/") {
        let device = publish.topic.split('/').nth(1).unwrap_or_default().to_owned();
        let known = crate::reading::valid_device_id(&device)
            && store.ownership().rule.admits(&device, now)
            && store.device_exists(&device).await.unwrap_or(false);
        let readings = match known {
            true => hearth::readings(&device, &publish.topic, &publish.payload, now).map_err(|e| e.to_string()),
            false => Err("unknown device".to_owned()),
        };
        return Some((device, readings));
    }
    let bridge = bridges.bridge_for(&publish.topic)?;
    match bridges.publish(&bridge, &publish.topic, &publish.payload, now).await {
        Err(crate::bridges::Refusal::Store) => None,
        Err(refusal) => Some((bridge, Err(refusal.to_string()))),
        Ok(published) => {
            // What the hub asks of a device it just met, through the broker (aside: the
            // loop that called this empties the client's queue).
            let own = |r: &crate::bridges::Command| bridges.bridge_for(&r.topic).is_none_or(|owner| owner == r.bridge);
            for request in published.requests.into_iter().filter(own) {
                let client = client.clone();
                tokio::spawn(async move {
                    let _ = client.publish(request.topic, QoS::AtLeastOnce, false, request.payload).await;
                });
            }
            Some((bridge, Ok(published.readings)))
        }
    }
}
