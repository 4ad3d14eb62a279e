//! The cloud outbox. Every message meant for beyond the home is written to SQLite first
//! (sealed), then delivered by one task per destination, strictly in order, one at a time,
//! and deleted only once the destination acknowledged it (MQTT PUBACK, HTTP 2xx). Each
//! message carries an id, so a receiver that sees one twice (after a lost ack) can tell.
//! Nothing here runs on the start-up path or blocks an automation: a rule's `cloud` action
//! only waits for the local insert.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Transport};
use serde_json::{Value as Json, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use hearth_model::automations::{Note, NotificationSource};

use crate::clock::Clock;
use crate::config::{CloudConfig, CloudDestination, CloudKind};
use crate::consent::Subject;
use crate::store::{OutboxRow, Store, StoreError};

/// How long one delivery attempt may take (connect, or publish and ack).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle deliverer looks again this often, even if nobody woke it.
const IDLE_CHECK: Duration = Duration::from_secs(30);
/// First wait after a failure; it doubles up to `cloud.retry_max_s`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The owner is told about dropped messages at most this often per destination.
const ALERT_EVERY_MS: i64 = 3_600_000;

/// Handle to put messages in the outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    clock: Clock,
    max_queued: i64,
    wake: Arc<HashMap<String, Arc<Notify>>>,
    /// Destinations the owner opened to tenants' rules.
    for_tenants: Arc<BTreeSet<String>>,
    last_alert: Arc<Mutex<HashMap<String, i64>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("no cloud destination {0:?} is configured")]
    Unknown(String),
    #[error("the cloud destination {0:?} is the owner's; tenants' rules may not use it")]
    NotForTenants(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Outbox {
    pub fn new(store: Store, config: &CloudConfig, clock: Clock) -> Self {
        let wake = config.destinations.iter().map(|d| (d.name.clone(), Arc::new(Notify::new()))).collect();
        Self {
            store,
            clock,
            max_queued: i64::from(config.max_queued),
            wake: Arc::new(wake),
            for_tenants: Arc::new(config.destinations.iter().filter(|d| d.tenants).map(|d| d.name.clone()).collect()),
            last_alert: Arc::default(),
        }
    }

    /// The destinations `subject`'s rules may name: all of them for the owner, those the
    /// owner opened to tenants for a tenancy.
    pub fn destinations(&self, subject: Subject) -> BTreeSet<String> {
        match subject {
            Subject::Owner => self.wake.keys().cloned().collect(),
            Subject::Tenancy(_) => (*self.for_tenants).clone(),
        }
    }

    /// Stores a message of `subject`'s rules for `destination` and wakes its deliverer.
    /// Each subject has its own share of the queue (`cloud.max_queued` messages): past it,
    /// the subject's own oldest message is dropped. Returns the message id.
    pub async fn send(
        &self,
        subject: Subject,
        destination: &str,
        topic: Option<&str>,
        message: Json,
    ) -> Result<String, OutboxError> {
        let wake = self.wake.get(destination).ok_or_else(|| OutboxError::Unknown(destination.to_owned()))?;
        if !self.destinations(subject).contains(destination) {
            return Err(OutboxError::NotForTenants(destination.to_owned()));
        }
        let id = crate::sharing::new_id("m")?;
        let now = self.clock.now_ms();
        let body = json!({ "id": id, "ts": now, "topic": topic.unwrap_or("events"), "message": message });
        let bytes = serde_json::to_vec(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let dropped = self.store.enqueue((destination, subject), &id, &bytes, now, self.max_queued).await?;
        if dropped > 0 {
            self.alert_dropped(destination, dropped, now).await;
        }
        wake.notify_one();
        Ok(id)
    }

    /// Tells the owner (once an hour at most) that a destination's queue is full.
    async fn alert_dropped(&self, destination: &str, dropped: i64, now: i64) {
        tracing::warn!(destination, dropped, "cloud outbox full: oldest messages dropped");
        let due = self.last_alert.lock().is_ok_and(|mut last| {
            let due = last.get(destination).is_none_or(|at| now - at >= ALERT_EVERY_MS);
            if due {
                last.insert(destination.to_owned(), now);
            }
            due
        });
        if !due {
            return;
        }
        let text = format!(
            "The outbox for {destination} is full ({} messages waiting): the oldest messages are being \
             dropped. Is the destination reachable?",
            self.max_queued
        );
        if let Err(error) = notify_owner(&self.store, &text, now).await {
            tracing::warn!(%error, "could not record the outbox alert");
        }
    }
}

/// Adds a notification for the owner, from the hub itself.
pub async fn notify_owner(store: &Store, text: &str, now: i64) -> Result<(), StoreError> {
    if let Some(owner) = store.owner_id().await? {
        let note = Note { source: NotificationSource::Hub, message: text.to_owned(), rule: None, trigger: None };
        store.add_notification(owner, &note, now).await?;
    }
    Ok(())
}

/// Starts one deliverer per configured destination; they run until `shutdown`.
pub fn spawn_deliverers(
    outbox: &Outbox,
    config: &CloudConfig,
    retry_max: Duration,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    for d in &config.destinations {
        let Some(wake) = outbox.wake.get(&d.name).cloned() else { continue };
        let deliverer = Deliverer {
            store: outbox.store.clone(),
            clock: outbox.clock.clone(),
            dest: d.clone(),
            wake,
            retry_max,
            shutdown: shutdown.clone(),
        };
        tasks.spawn(deliverer.run());
    }
}

struct Deliverer {
    store: Store,
    clock: Clock,
    dest: CloudDestination,
    wake: Arc<Notify>,
    retry_max: Duration,
    shutdown: CancellationToken,
}

/// Why one attempt failed. `Refused`: the destination will never take this message (HTTP
/// 4xx): it is dropped rather than blocking every message behind it.
#[derive(Debug)]
enum Failure {
    Retry(String),
    Refused(String),
}

impl Deliverer {
    async fn run(self) {
        let name = self.dest.name.clone();
        let mut mqtt: Option<MqttLink> = None;
        let http = match self.http_client() {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(destination = %name, %error, "cloud destination unusable");
                return;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let head = match self.store.outbox_head(&name, 64).await {
                Ok(head) => head,
                Err(error) => {
                    tracing::warn!(destination = %name, %error, "reading the outbox failed");
                    Vec::new()
                }
            };
            if head.is_empty() {
                tokio::select! {
                    () = self.shutdown.cancelled() => break,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_CHECK) => {}
                }
                continue;
            }
            let mut failed = false;
            tracing::debug!(destination = %name, queued = head.len(), "delivering");
            for row in head {
                let attempt = match self.dest.kind {
                    CloudKind::Mqtt => self.deliver_mqtt(&mut mqtt, &row).await,
                    CloudKind::Webhook => self.deliver_http(http.as_ref(), &row).await,
                };
                let now = self.clock.now_ms();
                let recorded = match attempt {
                    Ok(()) => {
                        backoff = FIRST_BACKOFF;
                        self.store.outbox_delivered(&name, row.seq, now).await
                    }
                    Err(Failure::Refused(reason)) => {
                        tracing::warn!(destination = %name, msg = %row.msg_id, %reason, "message refused by the destination; dropped");
                        let text = format!("{name} refused a message for good ({reason}); it was dropped.");
                        let _ = notify_owner(&self.store, &text, now).await;
                        self.store.outbox_delivered(&name, row.seq, now).await
                    }
                    Err(Failure::Retry(reason)) => {
                        tracing::info!(destination = %name, %reason, retry_in = ?backoff, "cloud delivery failed; will retry");
                        mqtt = None;
                        failed = true;
                        self.store.outbox_failed(&name, row.seq, &reason, now).await
                    }
                };
                if let Err(error) = recorded {
                    tracing::warn!(destination = %name, %error, "could not record a delivery");
                    failed = true;
                }
                if failed || self.shutdown.is_cancelled() {
                    break;
                }
            }
            if failed {
                // On the hub's clock: tests move it on rather than wait out the backoff.
                let retry_at = self.clock.now_ms() + i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX);
                tokio::select! {
                    () = self.shutdown.cancelled() => break,
                    () = self.clock.sleep_until(retry_at) => {}
                }
                backoff = (backoff * 2).min(self.retry_max);
            }
            if self.shutdown.is_cancelled() {
                break;
            }
        }
        if let Some(link) = mqtt {
            let _ = link.client.try_disconnect();
        }
    }

    fn http_client(&self) -> Result<Option<reqwest::Client>, String> {
        if self.dest.kind != CloudKind::Webhook {
            return Ok(None);
        }
        let mut builder = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).connect_timeout(ATTEMPT_TIMEOUT);
        if let Some(ca) = &self.dest.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("reading {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())? {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map(Some).map_err(|e| e.to_string())
    }

    async fn deliver_http(&self, client: Option<&reqwest::Client>, row: &OutboxRow) -> Result<(), Failure> {
        let client = client.ok_or_else(|| Failure::Retry("no HTTP client".into()))?;
        let body: Json = serde_json::from_slice(&row.body).map_err(|e| Failure::Refused(e.to_string()))?;
        let mut req = client.post(&self.dest.url).header("Idempotency-Key", &row.msg_id).json(&body);
        if let Some(user) = &self.dest.username {
            req = req.basic_auth(user, self.dest.password.as_ref().map(|p| p.expose()));
        }
        let resp = req.send().await.map_err(|e| Failure::Retry(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
            Err(Failure::Refused(format!("HTTP {status}")))
        } else {
            Err(Failure::Retry(format!("HTTP {status}")))
        }
    }

    async fn deliver_mqtt(&self, link: &mut Option<MqttLink>, row: &OutboxRow) -> Result<(), Failure> {
        if link.is_none() {
            *link = Some(MqttLink::connect(&self.dest).await.map_err(Failure::Retry)?);
        }
        let Some(l) = link.as_mut() else { return Err(Failure::Retry("not connected".into())) };
        let body: Json = serde_json::from_slice(&row.body).map_err(|e| Failure::Refused(e.to_string()))?;
        let topic = format!("{}{}", self.dest.topic_prefix, body["topic"].as_str().unwrap_or("events"));
        let payload = json!({ "id": body["id"], "ts": body["ts"], "message": body["message"] }).to_string();
        l.publish(&topic, payload).await.map_err(Failure::Retry)
    }
}

/// One connection to an upstream broker. A fresh one after every failure, so nothing
/// half-sent is replayed behind the outbox's back.
struct MqttLink {
    client: AsyncClient,
    events: EventLoop,
}

impl MqttLink {
    async fn connect(dest: &CloudDestination) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = dest.url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = dest.url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!("unsupported URL {:?}", dest.url));
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h.trim_start_matches('[').trim_end_matches(']').to_owned(), p.parse().map_err(|_| "bad port")?)
            }
            _ => (authority.to_owned(), if tls { 8883 } else { 1883 }),
        };
        let mut options = MqttOptions::new(dest.client_id.clone(), host, port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        if let Some(user) = &dest.username {
            options.set_credentials(
                user.clone(),
                dest.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default(),
            );
        }
        if tls {
            let transport = match &dest.ca_file {
                Some(ca) => {
                    Transport::tls(std::fs::read(ca).map_err(|e| format!("reading {}: {e}", ca.display()))?, None, None)
                }
                None => Transport::tls_with_default_config(),
            };
            options.set_transport(transport);
        }
        tracing::debug!(url = %dest.url, "connecting to the upstream broker");
        let (client, mut events) = AsyncClient::new(options, 16);
        tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == rumqttc::ConnectReturnCode::Success => {
                        return Ok(());
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => return Err(format!("refused: {:?}", ack.code)),
                    Ok(event) => tracing::trace!(?event, "upstream"),
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "no CONNACK in time".to_owned())??;
        Ok(Self { client, events })
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    async fn publish(&mut self, topic: &str, payload: String) -> Result<(), String> {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.map_err(|e| e.to_string())?;
        tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let mut sent = None;
            loop {
                match self.events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => sent = Some(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) if Some(ack.pkid) == sent => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "no PUBACK in time".to_owned())?
    }
}
