//! What every HTTP handler can reach. Built once in `run`; no globals.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::auth::{LoginLimiter, PasswordHasherPool, Setup};
use crate::automation::Automations;
use crate::clock::Clock;
use crate::config::Config;
use crate::consent::receipt::ReceiptSigner;
use crate::devices::DeviceEvent;
use crate::ingest::Rejections;
use crate::ingest::pipeline::Ingest;
use crate::outbox::Outbox;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    /// The hub's time.
    pub clock: Clock,
    pub ingest: Ingest,
    pub device_events: broadcast::Sender<DeviceEvent>,
    pub rejections: Rejections,
    /// Who is behind which bridge.
    pub bridges: crate::bridges::Bridges,
    /// Where commands to devices go (the UI's switches).
    pub commands: crate::automation::Commands,
    /// The hub's observations of devices that serve their readings over CoAP.
    pub observers: crate::ingest::coap_observe::Observers,
    pub setup: Setup,
    pub passwords: PasswordHasherPool,
    pub logins: LoginLimiter,
    /// Port of the embedded MQTT server in clear, for the examples shown with new credentials.
    pub mqtt_port: Option<u16>,
    /// Port of the embedded MQTT server over TLS, likewise.
    pub mqtts_port: Option<u16>,
    /// The hub's TLS certificates, when it serves TLS.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Port of the CoAP/DTLS server, likewise.
    pub coaps_port: Option<u16>,
    /// Signs consent receipts.
    pub signer: Arc<ReceiptSigner>,
    /// Tells the automation runtime that rules changed.
    pub automations: Automations,
    /// The cloud outbox (its destinations, for checking rules).
    pub outbox: Outbox,
    /// Ends long-lived responses (live streams) when the hub stops.
    pub shutdown: CancellationToken,
    /// Makes long-lived responses check their caller again.
    pub access: crate::auth::AccessChanges,
    /// The security log.
    pub audit: crate::audit::Audit,
    /// Removing devices, ending and shredding tenancies.
    pub lifecycle: crate::lifecycle::Lifecycle,
    /// Addresses logins were accepted from: they keep places strangers cannot take.
    pub known: std::sync::Arc<crate::crowd::Known>,
    /// Each household's share of what the hub holds.
    pub budgets: crate::budgets::Budgets,
}
