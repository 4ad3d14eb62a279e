//! Hearth's hub as a library: `run` boots every part on listeners the caller bound, so the
//! binary and the end-to-end tests start the hub the same way.

pub mod api;
pub mod audit;
pub mod auth;
pub mod automation;
pub mod bridges;
pub mod buckets;
pub mod budgets;
pub mod clock;
pub mod config;
pub mod consent;
pub mod conventions;
pub mod crowd;
pub mod crypto;
pub mod devices;
pub mod durable;
pub mod error;
pub mod http;
pub mod ingest;
pub mod lifecycle;
pub mod outbox;
pub mod reading;
pub mod repeated;
pub mod sharing;
pub mod state;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, MqttMode};
use crate::ingest::coap::{CoapContext, CoapListeners};
use crate::ingest::mqtt::{MqttContext, MqttServer};
use crate::ingest::pipeline;
use crate::ingest::recording::Choice;

/// The sockets the hub serves on, bound before `run` (port 0 in tests).
pub struct Listeners {
    /// Plain HTTP: with HTTPS on, only redirects and the CA certificate.
    pub http: TcpListener,
    /// HTTPS (the UI and API), unless `http.tls = false`.
    pub https: Option<TcpListener>,
    /// The embedded MQTT server's plain socket; `None` unless `mqtt.mode = "embedded"`.
    pub mqtt: Option<TcpListener>,
    /// The embedded MQTT server over TLS, unless `mqtt.tls = false`.
    pub mqtts: Option<TcpListener>,
    /// The CoAP sockets that are enabled.
    pub coap: CoapListeners,
}

/// Where each enabled server listens.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub mqtt: Option<SocketAddr>,
    pub mqtts: Option<SocketAddr>,
    pub coap_dtls: Option<SocketAddr>,
    pub coap_plain: Option<SocketAddr>,
}

impl Listeners {
    /// Binds what `config` asks for.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let http = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding HTTP to {}", config.http.listen))?;
        let https = match config.http.tls {
            true => Some(
                TcpListener::bind(config.http.tls_listen)
                    .await
                    .with_context(|| format!("binding HTTPS to {}", config.http.tls_listen))?,
            ),
            false => None,
        };
        let mqtt = match config.mqtt.mode {
            MqttMode::Embedded => Some(
                TcpListener::bind(config.mqtt.listen)
                    .await
                    .with_context(|| format!("binding MQTT to {}", config.mqtt.listen))?,
            ),
            MqttMode::External | MqttMode::Off => None,
        };
        let mqtts = match config.mqtt.mode == MqttMode::Embedded && config.mqtt.tls {
            true => Some(
                TcpListener::bind(config.mqtt.tls_listen)
                    .await
                    .with_context(|| format!("binding MQTT over TLS to {}", config.mqtt.tls_listen))?,
            ),
            false => None,
        };
        let coap = CoapListeners {
            dtls: match config.coap.dtls {
                true => Some(
                    hearth_dtls::Listener::bind(config.coap.dtls_listen)
                        .await
                        .with_context(|| format!("binding CoAP/DTLS to {}", config.coap.dtls_listen))?,
                ),
                false => None,
            },
            plain: match config.coap.plain {
                true => Some(
                    tokio::net::UdpSocket::bind(config.coap.plain_listen)
                        .await
                        .with_context(|| format!("binding CoAP to {}", config.coap.plain_listen))?,
                ),
                false => None,
            },
        };
        Ok(Self { http, https, mqtt, mqtts, coap })
    }

    /// The addresses actually bound (ports chosen by the system when asked for port 0).
    pub fn addresses(&self) -> std::io::Result<Addresses> {
        Ok(Addresses {
            http: self.http.local_addr()?,
            https: self.https.as_ref().map(TcpListener::local_addr).transpose()?,
            mqtt: self.mqtt.as_ref().map(TcpListener::local_addr).transpose()?,
            mqtts: self.mqtts.as_ref().map(TcpListener::local_addr).transpose()?,
            coap_dtls: self.coap.dtls.as_ref().map(hearth_dtls::Listener::local_addr),
            coap_plain: self.coap.plain.as_ref().map(tokio::net::UdpSocket::local_addr).transpose()?,
        })
    }
}

/// Creates the data directory, readable only by the hub's user, durably (a power cut right
/// after the first start must not take the directory, with all it will hold, away).
pub fn prepare_data_dir(config: &Config) -> anyhow::Result<()> {
    let dir = &config.data_dir;
    durable::create_dir_all(dir, 0o700).with_context(|| format!("creating data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

/// Opens the store in the configured data directory, creating the hub key on first run.
pub async fn open_store(config: &Config, now: i64) -> anyhow::Result<store::Store> {
    prepare_data_dir(config)?;
    let key_path = config.data_dir.join("hub.key");
    let db_path = config.data_dir.join("hearth.db");
    forget_unfinished_key(&key_path, &db_path)?;
    let (key, created) = crypto::Key::load_or_create(&key_path)?;
    if created {
        tracing::warn!(path = %key_path.display(), "created a new hub key: back it up, without it the data cannot be read");
    }
    let store = store::Store::open(&db_path, key, now).await?;
    // The database's name, made durable with the key's (SQLite fsyncs the directory for
    // its journals, not for the database file itself).
    durable::sync_dir(&config.data_dir).with_context(|| format!("syncing {}", config.data_dir.display()))?;
    Ok(store)
}

/// An empty hub key beside no database is what a power cut during the first start left
/// behind with earlier versions (which wrote the key in place): nothing was ever sealed
/// with it, so it is removed and made anew. An empty key beside a database is refused
/// later, as the loss it is.
fn forget_unfinished_key(key: &Path, db: &Path) -> anyhow::Result<()> {
    let empty = std::fs::metadata(key).is_ok_and(|m| m.is_file() && m.len() == 0);
    if empty && !db.exists() {
        tracing::warn!(path = %key.display(), "an empty hub key from an interrupted first start: making a new one");
        durable::remove(key).with_context(|| format!("removing {}", key.display()))?;
    }
    Ok(())
}

/// Runs the hub until `shutdown` is cancelled, then stops taking input, commits what was
/// accepted, and returns. Every part reads the time from `clock`: [`Clock::system`] in a
/// home, a [`clock::TestClock`]'s in tests that move time forward.
pub async fn run(
    config: Config,
    listeners: Listeners,
    clock: Clock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // One TLS stack for the whole process (upstream MQTT and webhooks): rustls on ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = open_store(&config, clock.now_ms()).await?;
    let series = store.load_series_state().await?;
    // The writer outlives the protocol servers: they still wait for commits of what they
    // accepted before they stop.
    let writer_stop = CancellationToken::new();
    let (ingest, writer) = pipeline::spawn_writer(
        store.clone(),
        series,
        (config.batch_policy(), &config.data_dir),
        clock.clone(),
        writer_stop.clone(),
    );
    for device in store.devices().await? {
        let chosen = device.chosen;
        let choice = Choice { all: chosen.unrecorded, values: chosen.unrecorded_values };
        ingest.unrecorded().choose(&device.id, choice);
    }

    let tls = match config.tls_wanted() {
        true => Some(Arc::new(tls::Tls::load(&config.tls, &config.data_dir, clock.now_ms()).context("preparing TLS")?)),
        false => None,
    };
    let fingerprint = tls.as_ref().map(|tls| tls.ca().fingerprint.clone());
    if let Some(fingerprint) = &fingerprint {
        tracing::info!(%fingerprint, "clients trust the hub by this CA certificate (SHA-256)");
    }
    let setup = if store.has_owner().await? {
        // A used code's removal that a power cut undid.
        auth::forget(&config.data_dir.join("setup-code"));
        auth::Setup::default()
    } else {
        let code = auth::SetupCode::create(&config.data_dir).context("writing the setup code")?;
        auth::announce(&code, fingerprint.as_deref());
        auth::Setup::new(Some(code))
    };
    let (device_events, _) = broadcast::channel(1024);
    let rejections = ingest::Rejections::default();
    let lifecycle = lifecycle::Lifecycle::new(store.clone());
    let budgets = budgets::Budgets::new(config.budgets.clone(), store.clone(), clock.clone());
    // Addresses logins were accepted from, by any server: they keep places strangers
    // cannot take (decision 0024).
    let known = std::sync::Arc::new(crowd::Known::default());
    let bridges = bridges::Bridges::load(store.clone(), rejections.clone(), lifecycle.clone(), budgets.clone()).await?;
    let retained = ingest::retained::Retained::load(store.clone(), clock.clone()).await?;
    let addresses = listeners.addresses()?;
    let (mqtt_port, coaps_port) = (addresses.mqtt.map(|a| a.port()), addresses.coap_dtls.map(|a| a.port()));
    let mqtts_port = addresses.mqtts.map(|a| a.port());
    let config = Arc::new(config);

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(tls) = &tls {
        tasks.spawn(tls::refresh_periodically(tls.clone(), clock.clone(), shutdown.clone()));
    }
    let audit = audit::Audit::new(store.clone(), clock.clone());
    tasks.spawn(audit::flush_periodically(audit.clone(), shutdown.clone()));
    tasks.spawn(bridges::sweep_periodically(bridges.clone(), ingest.clone(), clock.clone(), shutdown.clone()));
    let mut commands = automation::Commands::Off;
    // What reads devices' messages starts once the lifecycle's followers are attached (a
    // connection's message may remove a device).
    let mut serving = Vec::new();
    let mut external_client = None;
    if let Some(listener) = listeners.mqtt {
        tracing::info!(addr = %listener.local_addr()?, "embedded MQTT server listening");
        let ctx = MqttContext {
            store: store.clone(),
            ingest: ingest.clone(),
            device_events: device_events.clone(),
            rejections: rejections.clone(),
            connect_timeout: std::time::Duration::from_secs(u64::from(config.mqtt.connect_timeout_s)),
            max_keep_alive: std::time::Duration::from_secs(u64::from(config.mqtt.max_keep_alive_s)),
            plain_from_loopback: config.mqtt.plain_from_loopback,
            audit: audit.clone(),
            clock: clock.clone(),
            bridges: bridges.clone(),
            retained: retained.clone(),
            budgets: budgets.clone(),
            known: known.clone(),
        };
        let server = MqttServer::new(ctx);
        server.restore().await?;
        tasks.spawn(server.clone().watch(shutdown.clone()));
        commands = automation::Commands::Embedded(server.clone());
        if let (Some(listener), Some(tls)) = (listeners.mqtts, &tls) {
            tracing::info!(addr = %listener.local_addr()?, "embedded MQTT server listening over TLS");
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.mqtt.clone());
            serving.push(server.clone().serve(listener, Some(acceptor), shutdown.clone()));
        }
        serving.push(server.serve(listener, None, shutdown.clone()));
    }
    if config.mqtt.mode == MqttMode::External
        && let Some(external) = config.mqtt.external.clone()
    {
        let client = ingest::mqtt_client::client(&external);
        commands = automation::Commands::External { client: client.0.clone(), retained: retained.clone() };
        let ctx = ingest::mqtt_client::ExternalContext {
            retained: retained.clone(),
            store: store.clone(),
            ingest: ingest.clone(),
            rejections: rejections.clone(),
            bridges: bridges.clone(),
            device_events: device_events.subscribe(),
        };
        external_client = Some(ingest::mqtt_client::run(external, client, ctx, shutdown.clone()));
    }
    let observers = ingest::coap_observe::Observers::new(
        ingest::coap_observe::ObserveContext {
            store: store.clone(),
            ingest: ingest.clone(),
            rejections: rejections.clone(),
        },
        shutdown.clone(),
    );
    let access = auth::AccessChanges::default();
    let followers = Arc::new(lifecycle::Followers {
        device_events: device_events.clone(),
        commands: commands.clone(),
        bridges: bridges.clone(),
        observers: observers.clone(),
        access: access.clone(),
        unrecorded: ingest.unrecorded().clone(),
    });
    lifecycle.attach(&followers);
    for server in serving {
        tasks.spawn(server);
    }
    if let Some(client) = external_client {
        tasks.spawn(client);
    }
    if listeners.coap.dtls.is_some() || listeners.coap.plain.is_some() {
        let ctx = CoapContext {
            store: store.clone(),
            ingest: ingest.clone(),
            rejections: rejections.clone(),
            handshake_timeout: std::time::Duration::from_secs(u64::from(config.coap.handshake_timeout_s)),
            device_events: device_events.clone(),
        };
        tasks.spawn(ingest::coap::serve(ctx, listeners.coap, shutdown.clone()));
    }
    tasks.spawn(auth::prune_sessions_periodically(store.clone(), clock.clone(), shutdown.clone()));
    let signer = Arc::new(store.receipt_signer(clock.now_ms()).await?);
    tasks.spawn(sharing::sweep_periodically(
        (store.clone(), lifecycle.clone()),
        signer.clone(),
        config.consent.jurisdiction.clone(),
        clock.clone(),
        shutdown.clone(),
    ));

    observers.start_all().await?;
    let outbox = outbox::Outbox::new(store.clone(), &config.cloud, clock.clone());
    let retry_max = std::time::Duration::from_secs(u64::from(config.cloud.retry_max_s));
    outbox::spawn_deliverers(&outbox, &config.cloud, retry_max, &shutdown, &mut tasks);
    automation::upgrade::coap_actions_name_devices(&store, clock.now_ms()).await?;
    let automations = automation::runtime::spawn(
        automation::AutomationContext {
            store: store.clone(),
            ingest: ingest.clone(),
            commands: commands.clone(),
            bridges: bridges.clone(),
            outbox: outbox.clone(),
            clock: clock.clone(),
        },
        shutdown.clone(),
        &mut tasks,
    )
    .await?;

    let state = state::AppState {
        config: config.clone(),
        store: store.clone(),
        clock,
        ingest: ingest.clone(),
        device_events,
        rejections,
        bridges,
        commands,
        observers,
        setup,
        passwords: auth::PasswordHasherPool::default(),
        logins: auth::LoginLimiter::default(),
        mqtt_port,
        mqtts_port,
        tls: tls.clone(),
        coaps_port,
        signer,
        automations,
        outbox,
        shutdown: shutdown.clone(),
        access,
        audit,
        lifecycle,
        known: known.clone(),
        budgets: budgets.clone(),
    };
    let limits =
        http::Limits { header_timeout: std::time::Duration::from_secs(u64::from(config.http.header_timeout_s)) };
    match (listeners.https, &tls) {
        (Some(https), Some(tls)) => {
            let port = https.local_addr()?.port();
            tracing::info!(addr = %https.local_addr()?, "web UI and API listening over HTTPS");
            tracing::info!(addr = %listeners.http.local_addr()?, "plain HTTP listening: redirects, CA certificate, /trust");
            let plain = api::trust::plain_router(tls.ca().clone(), port);
            tasks.spawn(http::serve(listeners.http, plain, (limits, known.clone()), None, shutdown.clone()));
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.https.clone());
            http::serve(https, api::router(state), (limits, known), Some(acceptor), shutdown.clone()).await;
        }
        _ => {
            tracing::warn!(addr = %listeners.http.local_addr()?, "web UI and API listening in clear (http.tls = false): use only behind a TLS proxy on this machine");
            http::serve(listeners.http, api::router(state), (limits, known), None, shutdown.clone()).await;
        }
    }
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    drop(followers);
    drop(ingest);
    writer_stop.cancel();
    writer.await.context("the writer task failed")?;
    store.close().await;
    tracing::info!("hub stopped");
    Ok(())
}
