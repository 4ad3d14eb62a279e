//! Configuration: defaults, then an optional TOML file, then `HUB_*` environment variables.
//! `hub.example.toml` at the repository root lists every key. Only shape and defaults live
//! here; nothing is opened or bound.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything the hub can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the database, the hub key and (before setup) the setup code.
    pub data_dir: PathBuf,
    /// The web UI and REST API.
    pub http: HttpConfig,
    /// Device ingest over MQTT.
    pub mqtt: MqttConfig,
    /// Device ingest over CoAP.
    pub coap: CoapConfig,
    /// Write batching.
    pub store: StoreConfig,
    /// Tenancies and data sharing.
    pub consent: ConsentConfig,
    /// Where automations may send messages beyond the home, through the outbox.
    pub cloud: CloudConfig,
    /// Certificates for HTTPS and MQTT over TLS.
    pub tls: TlsConfig,
    /// What each household (the owner's, each tenancy's) may hold at most.
    pub budgets: BudgetsConfig,
}

/// Each household's share of what the hub holds: the owner's household and each tenancy
/// have one each, so that one filling its share takes nothing from another's. When one is
/// reached, the owner is told (at most once an hour per budget and household).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// MQTT sessions logged in at once. Past it, the household's new session is refused
    /// (its devices' sessions past 4 each already give way to their newest).
    pub sessions: usize,
    /// MQTT sessions kept for devices that are away (clean session off). Past it, the
    /// household's own session away longest gives way.
    pub persistent_sessions: usize,
    /// QoS 1 commands queued for one sleeping session, from one household. Past it, that
    /// household's oldest command to the session is dropped.
    pub queued_commands: usize,
    /// Devices, added by hand or brought by the household's bridges. Past it, a new one is
    /// refused.
    pub devices: usize,
    /// Devices that are bridges (granted topic namespaces). Past it, granting another is
    /// refused.
    pub bridges: usize,
    /// Bytes of what the household's devices said of themselves (discovery configs, device
    /// lists), as stored. Past it, a new or larger description is refused.
    pub described_bytes: usize,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        Self {
            sessions: 512,
            persistent_sessions: 256,
            queued_commands: 100,
            devices: 2048,
            bridges: 256,
            described_bytes: 8 << 20,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Names or addresses the hub's certificate should cover besides the host name,
    /// `<hostname>.local`, `localhost` and the machine's own addresses (a DNS name you gave
    /// the hub, say).
    pub names: Vec<String>,
    /// Your own certificate chain (PEM), instead of one from the hub's CA. With `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// Most messages waiting for one destination. When a new message would exceed it, the
    /// oldest waiting message is dropped (and counted, and the owner is notified): fresh
    /// news beats stale news, and the SD card never fills up.
    pub max_queued: u32,
    /// Longest wait between two delivery attempts to an unreachable destination, in
    /// seconds; the wait starts at half a second and doubles up to this.
    pub retry_max_s: u32,
    /// The destinations rules may name in a `cloud` action.
    pub destinations: Vec<CloudDestination>,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self { max_queued: 10_000, retry_max_s: 300, destinations: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudKind {
    /// Publish to an MQTT broker (QoS 1; `mqtt://` or `mqtts://`).
    Mqtt,
    /// POST JSON to a URL (`http://` or `https://`).
    Webhook,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudDestination {
    /// The name rules use.
    pub name: String,
    /// `mqtt` or `webhook`.
    pub kind: CloudKind,
    /// `mqtt://host:port`, `mqtts://host:port` (TLS), `http://...` or `https://...`.
    pub url: String,
    /// MQTT user name (or HTTP Basic user for a webhook).
    pub username: Option<String>,
    /// Its password.
    pub password: Option<Secret>,
    /// MQTT client id; keep it stable (the broker keeps the session under it).
    #[serde(default = "default_bridge_client_id")]
    pub client_id: String,
    /// MQTT: topics are this prefix followed by the rule's topic (default `events`).
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// PEM file of the certificate authorities to trust for TLS; the system's by default.
    pub ca_file: Option<PathBuf>,
    /// Whether tenants' rules may send here too. By default a destination is the owner's.
    #[serde(default)]
    pub tenants: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// Whose law the consent receipts are given under (an ISO 3166 code or a region such
    /// as "EU"); written into every receipt.
    pub jurisdiction: String,
    /// Days a tenancy's data is kept after it ends, for the tenant to export it, before its
    /// key is destroyed. A new tenancy may set its own; the tenant can shred sooner.
    pub retention_days: u32,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        Self { jurisdiction: "EU".into(), retention_days: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the web UI and API over HTTPS. All interfaces by default: phones on the
    /// home network must reach it.
    pub tls_listen: SocketAddr,
    /// Whether to serve HTTPS on `tls_listen` (the default). With `tls = false`, `listen`
    /// serves the UI and API in clear: only for a TLS proxy on the same machine.
    pub tls: bool,
    /// Plain HTTP. With TLS on, it only redirects to HTTPS, serves the hub's CA certificate
    /// (`/hearth-ca.pem`, `/hearth-ca.crt`), `/api/health` and the page on trusting the hub
    /// (`/trust`).
    pub listen: SocketAddr,
    /// Seconds a request's headers have to arrive, which is also how long a keep-alive
    /// connection may sit idle (1-300).
    pub header_timeout_s: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttMode {
    /// Run Hearth's own MQTT server (the default).
    Embedded,
    /// Subscribe to an external broker (see `mqtt.external`); nothing listens here.
    External,
    /// No MQTT at all.
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `embedded`, `external` or `off`.
    pub mode: MqttMode,
    /// Address of the embedded server over TLS (MQTTS), the way devices connect by default.
    pub tls_listen: SocketAddr,
    /// Whether to serve MQTT over TLS on `tls_listen` (the default).
    pub tls: bool,
    /// Address of the embedded server in clear, for devices the owner marked as unable to
    /// do TLS and for clients on the hub itself (loopback).
    pub listen: SocketAddr,
    /// Whether clients on the hub itself (loopback addresses) may use plain MQTT whatever
    /// their device's mark (a bridge running beside the hub). On by default.
    pub plain_from_loopback: bool,
    /// The broker to use when `mode = "external"`.
    pub external: Option<ExternalMqtt>,
    /// Seconds a new connection has to send its CONNECT before it is closed (1-120).
    pub connect_timeout_s: u32,
    /// The longest keep-alive a device may ask for, in seconds (1-3600): a session that
    /// asks for none (0) or for more gets this, and is closed after 1.5 times it in silence.
    pub max_keep_alive_s: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalMqtt {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// The hub's own login on the broker (it must be allowed to read `hearth/#`).
    pub username: Option<String>,
    /// The hub's password on the broker.
    pub password: Option<Secret>,
    /// Client id; keep it stable, the broker holds the hub's session under it.
    #[serde(default = "default_client_id")]
    pub client_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoapConfig {
    /// CoAP over DTLS (`coaps://`), each device with its own pre-shared key.
    pub dtls: bool,
    /// Address of the DTLS server.
    pub dtls_listen: SocketAddr,
    /// Plain CoAP, unencrypted, for legacy devices on a trusted network only. Devices then
    /// send their secret in the request (`?k=<secret>`) in clear. Off by default.
    pub plain: bool,
    /// Address of the plain CoAP server.
    pub plain_listen: SocketAddr,
    /// Seconds a DTLS handshake may take before the peer is dropped (1-120).
    pub handshake_timeout_s: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Most milliseconds a QoS 1 reading from a device that sends now and then waits for
    /// its commit (and acknowledgement), gathered with others (at most 900). Senders that
    /// wait on their acknowledgements to send more are committed at once (decision 0029).
    #[serde(alias = "commit_interval_ms")]
    pub acked_within_ms: u64,
    /// Most milliseconds a reading nobody waits for (MQTT QoS 0, CoAP NON) waits for its
    /// commit (at most 60000): what a power cut may take of them.
    pub unacked_within_ms: u64,
    /// Megabytes the data directory's file system keeps free: below this, readings are
    /// refused (not acknowledged) so that logins and settings still have room. 0: none.
    pub reserve_mb: u64,
    /// Most readings in one transaction.
    pub max_batch: usize,
}

/// A secret from the configuration. Prints as `****`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

fn default_mqtt_port() -> u16 {
    1883
}

fn default_client_id() -> String {
    "hearth-hub".into()
}

fn default_bridge_client_id() -> String {
    "hearth-hub-bridge".into()
}

fn default_topic_prefix() -> String {
    "hearth-cloud/".into()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            http: HttpConfig::default(),
            mqtt: MqttConfig::default(),
            coap: CoapConfig::default(),
            store: StoreConfig::default(),
            consent: ConsentConfig::default(),
            cloud: CloudConfig::default(),
            tls: TlsConfig::default(),
            budgets: BudgetsConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            tls_listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            header_timeout_s: 15,
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            mode: MqttMode::Embedded,
            tls_listen: SocketAddr::from(([0, 0, 0, 0], 8883)),
            tls: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            plain_from_loopback: true,
            external: None,
            connect_timeout_s: 10,
            max_keep_alive_s: 3600,
        }
    }
}

impl Default for CoapConfig {
    fn default() -> Self {
        Self {
            dtls: true,
            dtls_listen: SocketAddr::from(([0, 0, 0, 0], 5684)),
            plain: false,
            plain_listen: SocketAddr::from(([0, 0, 0, 0], 5683)),
            handshake_timeout_s: 10,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { acked_within_ms: 900, unacked_within_ms: 30_000, reserve_mb: 64, max_batch: 10_000 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("environment variable {name}: {reason}")]
    Env { name: &'static str, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` if given, then `HUB_DATA_DIR`, `HUB_HTTP_LISTEN`,
    /// `HUB_HTTPS_LISTEN`, `HUB_MQTT_LISTEN`, `HUB_MQTTS_LISTEN`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            None => Self::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
                toml::from_str(&text)
                    .map_err(|source| ConfigError::Parse { path: path.display().to_string(), source })?
            }
        };
        if let Ok(dir) = std::env::var("HUB_DATA_DIR") {
            config.data_dir = dir.into();
        }
        if let Some(addr) = env_addr("HUB_HTTP_LISTEN")? {
            config.http.listen = addr;
        }
        if let Some(addr) = env_addr("HUB_HTTPS_LISTEN")? {
            config.http.tls_listen = addr;
        }
        if let Some(addr) = env_addr("HUB_MQTT_LISTEN")? {
            config.mqtt.listen = addr;
        }
        if let Some(addr) = env_addr("HUB_MQTTS_LISTEN")? {
            config.mqtt.tls_listen = addr;
        }
        config.validate()?;
        Ok(config)
    }

    /// A configuration for tests: everything under `data_dir`, loopback only, short batches.
    pub fn for_test(data_dir: &Path) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            data_dir: data_dir.to_owned(),
            // Most tests speak plain HTTP to the API; those of TLS turn it on.
            http: HttpConfig { listen: loopback, tls_listen: loopback, tls: false, ..HttpConfig::default() },
            // Short protocol deadlines, so tests of idle or half-open peers are quick.
            mqtt: MqttConfig { listen: loopback, tls_listen: loopback, connect_timeout_s: 2, ..MqttConfig::default() },
            coap: CoapConfig {
                dtls_listen: loopback,
                plain_listen: loopback,
                handshake_timeout_s: 2,
                ..CoapConfig::default()
            },
            store: StoreConfig { acked_within_ms: 50, unacked_within_ms: 50, reserve_mb: 0, ..StoreConfig::default() },
            consent: ConsentConfig::default(),
            cloud: CloudConfig::default(),
            tls: TlsConfig::default(),
            budgets: BudgetsConfig::default(),
        }
    }

    /// Whether anything is served over TLS.
    pub fn tls_wanted(&self) -> bool {
        self.http.tls || (self.mqtt.tls && self.mqtt.mode == MqttMode::Embedded)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.store.acked_within_ms > 900 || self.store.unacked_within_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "store.acked_within_ms must be at most 900, store.unacked_within_ms at most 60000".into(),
            ));
        }
        if !(1..=120).contains(&self.mqtt.connect_timeout_s) || !(1..=120).contains(&self.coap.handshake_timeout_s) {
            return Err(ConfigError::Invalid(
                "mqtt.connect_timeout_s and coap.handshake_timeout_s must be 1 to 120".into(),
            ));
        }
        if !(1..=300).contains(&self.http.header_timeout_s) {
            return Err(ConfigError::Invalid("http.header_timeout_s must be 1 to 300".into()));
        }
        if !(1..=3600).contains(&self.mqtt.max_keep_alive_s) {
            return Err(ConfigError::Invalid("mqtt.max_keep_alive_s must be 1 to 3600".into()));
        }
        if !self.http.tls && !self.http.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(
                "http.tls = false would serve passwords and sessions in clear to the network: bind http.listen \
                 to a loopback address (for a TLS proxy on this machine)"
                    .into(),
            ));
        }
        if let Some(bad) =
            self.tls.names.iter().find(|n| n.parse::<std::net::IpAddr>().is_err() && !crate::tls::is_narrow_dns_name(n))
        {
            return Err(ConfigError::Invalid(format!(
                "tls.names: {bad:?} is neither an IP address nor a DNS name of two labels or more (no wildcards)"
            )));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid("tls.cert_file and tls.key_file go together".into()));
        }
        let budgets = &self.budgets;
        let counts = [budgets.sessions, budgets.persistent_sessions, budgets.queued_commands, budgets.bridges];
        if counts.iter().any(|b| !(1..=10_000).contains(b)) {
            return Err(ConfigError::Invalid(
                "budgets.sessions, budgets.persistent_sessions, budgets.queued_commands and budgets.bridges must be 1 \
                 to 10000"
                    .into(),
            ));
        }
        if !(1..=100_000).contains(&budgets.devices) {
            return Err(ConfigError::Invalid("budgets.devices must be 1 to 100000".into()));
        }
        if !((64 << 10)..=(1 << 30)).contains(&budgets.described_bytes) {
            return Err(ConfigError::Invalid("budgets.described_bytes must be 65536 to 1073741824".into()));
        }
        if self.store.max_batch == 0 {
            return Err(ConfigError::Invalid("store.max_batch must be at least 1".into()));
        }
        if self.consent.jurisdiction.trim().is_empty() || self.consent.jurisdiction.len() > 32 {
            return Err(ConfigError::Invalid("consent.jurisdiction must be 1-32 characters, e.g. \"EU\"".into()));
        }
        if self.consent.retention_days > 3660 {
            return Err(ConfigError::Invalid("consent.retention_days must be at most 3660".into()));
        }
        if self.cloud.retry_max_s == 0 || self.cloud.retry_max_s > 86_400 {
            return Err(ConfigError::Invalid("cloud.retry_max_s must be 1 to 86400".into()));
        }
        if self.cloud.max_queued == 0 {
            return Err(ConfigError::Invalid("cloud.max_queued must be at least 1".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for d in &self.cloud.destinations {
            if d.name.is_empty() || d.name.len() > 64 || !names.insert(d.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "cloud destination names must be unique, 1-64 characters ({:?})",
                    d.name
                )));
            }
            let schemes: &[&str] = match d.kind {
                CloudKind::Mqtt => &["mqtt://", "mqtts://"],
                CloudKind::Webhook => &["http://", "https://"],
            };
            if !schemes.iter().any(|s| d.url.starts_with(s)) {
                return Err(ConfigError::Invalid(format!(
                    "cloud destination {:?}: url must start with {}",
                    d.name,
                    schemes.join(" or ")
                )));
            }
        }
        if self.mqtt.mode == MqttMode::External && self.mqtt.external.is_none() {
            return Err(ConfigError::Invalid("mqtt.mode = \"external\" needs an [mqtt.external] section".into()));
        }
        Ok(())
    }

    /// How long the writer may gather readings before committing them.
    pub fn batch_policy(&self) -> crate::ingest::pipeline::BatchPolicy {
        crate::ingest::pipeline::BatchPolicy {
            acked_within: Duration::from_millis(self.store.acked_within_ms),
            unacked_within: Duration::from_millis(self.store.unacked_within_ms),
            max_batch: self.store.max_batch,
            reserve_bytes: self.store.reserve_mb.saturating_mul(1_000_000),
        }
    }
}

fn env_addr(name: &'static str) -> Result<Option<SocketAddr>, ConfigError> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) => {
            v.parse().map(Some).map_err(|e| ConfigError::Env { name, reason: format!("{v:?} is not host:port ({e})") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_and_lists_every_section() {
        let text = include_str!("../../hub.example.toml");
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!((config.store.acked_within_ms, config.store.unacked_within_ms), (900, 30_000));
        let older: Config = toml::from_str("[store]\ncommit_interval_ms = 250").unwrap();
        assert_eq!(older.store.acked_within_ms, 250, "an older file's commit interval still reads");
        assert_eq!((config.consent.jurisdiction.as_str(), config.consent.retention_days), ("EU", 30));
        assert_eq!((config.cloud.max_queued, config.cloud.destinations.len()), (10_000, 0));
        let with_cloud: Config = toml::from_str(
            "[[cloud.destinations]]\nname = 'upstream'\nkind = 'mqtt'\nurl = 'mqtts://broker.example:8883'\npassword = 'pw'",
        )
        .unwrap();
        with_cloud.validate().unwrap();
        assert!(!format!("{with_cloud:?}").contains("pw\""));
        let bad: Config =
            toml::from_str("[[cloud.destinations]]\nname = 'x'\nkind = 'webhook'\nurl = 'mqtt://h'").unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("datadir = 'x'").is_err());
        assert!(toml::from_str::<Config>("[http]\nlisten = 'nowhere'").is_err());
        let c: Config = toml::from_str("[store]\ncommit_interval_ms = 5000").unwrap();
        assert!(c.validate().is_err());
        let c: Config = toml::from_str("[mqtt]\nmode = 'external'").unwrap();
        assert!(c.validate().is_err());
        // The UI and API in clear only on loopback, behind a proxy on the same machine.
        let c: Config = toml::from_str("[http]\ntls = false").unwrap();
        assert!(c.validate().is_err());
        let c: Config = toml::from_str("[http]\ntls = false\nlisten = '127.0.0.1:8080'").unwrap();
        assert!(c.validate().is_ok());
        let c: Config = toml::from_str("[tls]\ncert_file = 'a.pem'").unwrap();
        assert!(c.validate().is_err());
        for bad in ["io", "*.example.org", "", "a..b"] {
            let c: Config = toml::from_str(&format!("[tls]\nnames = ['{bad}']")).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        let c: Config = toml::from_str("[tls]\nnames = ['hub.example.org', '203.0.113.5']").unwrap();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn secrets_print_redacted() {
        let c: Config =
            toml::from_str("[mqtt]\nmode='external'\n[mqtt.external]\nhost='h'\npassword='hunter2'").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
