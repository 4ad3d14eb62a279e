//! Devices, their credentials, their readings and the live stream.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Bucket, DeviceClass, Value};

/// One accepted reading: on the live stream (`readings` events, a list per commit), and on
/// its way into the store or out of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub device: String,
    pub metric: String,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub value: Value,
    /// Unit as the device reported it, kept per series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// The latest value of one of a device's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub metric: String,
    pub unit: Option<String>,
    pub ts: i64,
    pub value: Value,
    /// How often it usually reports (ms): an average of the gaps between its readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<i64>,
}

/// Why a device's messages were refused, and how often they were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub count: u64,
    pub last_reason: String,
    pub last_at: i64,
    /// The last few different reasons, newest first, each with how often and when last
    /// (a bridge refused for several things at once shows each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<Refused>,
}

/// One reason a device's messages were refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub reason: String,
    pub count: u64,
    pub last_at: i64,
}

/// Whose device it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BelongsTo {
    /// The home's, run by the owner.
    Owner,
    /// A tenant's own, which is theirs alone.
    Tenant,
}

names!(BelongsTo, "device holder (owner or tenant)", { Owner => "owner", Tenant => "tenant" });

/// A device as its viewer sees it: `GET /api/devices` and `GET /api/devices/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub created: i64,
    /// When its credentials were last issued.
    pub credentials_changed: i64,
    /// As the owner classed it (a tenant's own devices are always household).
    pub class: DeviceClass,
    pub belongs_to: BelongsTo,
    /// Whether the viewer may change its credentials or remove it.
    pub manageable: bool,
    /// Where rules send this device CoAP commands (`192.0.2.7` or `192.0.2.7:5683`), as
    /// the owner set it; shown to the owner and tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coap_address: Option<String>,
    /// Whether the owner allows it plain MQTT (for devices that cannot do TLS).
    #[serde(default)]
    pub plaintext: bool,
    /// When it last connected over plain MQTT from elsewhere than the hub itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_seen: Option<i64>,
    pub metrics: Vec<Metric>,
    /// The last refused message, if any, with the reason (only for those who manage it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejection>,
    /// For a bridge: the topic namespaces it may publish in for the devices behind it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// For a device behind a bridge: the bridge's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// For a device behind a bridge: what it said of itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered: Option<Discovered>,
    /// CoAP resources the hub observes on it (`coaps://192.0.2.7/temperature`), as the owner
    /// set them; shown to the owner and tenants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observe: Vec<String>,
    /// A device, or a bridge that only speaks for the devices behind it.
    #[serde(default)]
    pub kind: DeviceKind,
    /// Its room: as people chose, or else as discovery suggested (`suggested_area`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Pinned first on the home page.
    #[serde(default)]
    pub favourite: bool,
    /// Left out of the home page (still on its room's list of hidden devices, and in rules).
    #[serde(default)]
    pub hidden: bool,
    /// Names people gave its values, by metric (in place of what its device calls them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its values people folded away from its card (with its settings and diagnostics).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden_values: Vec<String>,
    /// None of its values is recorded: shown live and heard by automations, never stored.
    #[serde(default)]
    pub unrecorded: bool,
    /// Its values that are not recorded (as above), by metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrecorded_values: Vec<String>,
}

/// What a device is to the people of the home.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// Something in the home: a sensor, a plug, a light (also one that is its own
    /// connection, as a Tasmota plug is).
    #[default]
    Device,
    /// A coordinator or gateway that publishes for others (a Zigbee2MQTT bridge) and says
    /// nothing of itself: on the bridges page, never a card or a rule's target.
    Bridge,
}

names!(DeviceKind, "device kind", { Device => "device", Bridge => "bridge" });

/// `PATCH /api/devices/{id}`: what people choose for a device; each field left out stays
/// as it is. Discovery never overwrites these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceChanges {
    /// A new name; empty gives back the name it was added or announced with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its room; empty gives back the room discovery suggested, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub favourite: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// Names for its values, by metric; an empty name gives back its device's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its values folded away from its card, all of them (this list replaces the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_values: Option<Vec<String>>,
    /// Whether none of its values is recorded (shown live, never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrecorded: Option<bool>,
    /// Its values not recorded, all of them (this list replaces the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrecorded_values: Option<Vec<String>>,
}

/// `PUT /api/devices/{id}/observe`: the CoAP resources of a device that serves its readings
/// for the hub to observe (`coaps://` with the device's own key, `coap://` only for a device
/// marked as unable to do DTLS); each resource's last path segment names its metric. An
/// empty list stops observing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetObserve {
    pub uris: Vec<String>,
}

/// The convention a device speaks: the one it was discovered by, or Hearth's own topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    Zigbee2mqtt,
    Tasmota,
    Shelly,
    Esphome,
    HomeAssistant,
    Hearth,
}

// In the order a message is offered to them: the conventions with topics of their own
// (Zigbee2MQTT's bridge topics, Tasmota's discovery and prefixes, discovery configs) before
// those that claim topics by their last levels.
names!(Convention, "discovery convention", {
    Zigbee2mqtt => "zigbee2mqtt",
    Tasmota => "tasmota",
    HomeAssistant => "home_assistant",
    Shelly => "shelly",
    Esphome => "esphome",
    Hearth => "hearth",
});

/// What a device said of itself (one behind a bridge, or one that is its own connection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discovered {
    pub convention: Convention,
    /// The name it gave itself (which may differ from the name it has in Hearth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The room it suggests for itself (Home Assistant's `suggested_area`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    /// Its firmware, where it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Whether it was last said to be online; `None` if nothing said so either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// What it said of its values: units, classes, and which take commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<DiscoveredValue>,
}

/// One value of a device behind a bridge, as it described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredValue {
    pub metric: String,
    /// What its device calls it ("Brew Strength", a relay's name), where it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Home Assistant's device class (`temperature`, `door`, `power`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Home Assistant's state class (`measurement`, `total`, `total_increasing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_class: Option<String>,
    /// Digits after the decimal point it is best shown with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u8>,
    /// Whether rules and the UI can set it.
    #[serde(default)]
    pub settable: bool,
    /// Whether it is on/off (a switch, a light, a cover's open/closed, a binary sensor).
    #[serde(default)]
    pub on_off: bool,
    /// The values it takes, when they are a list (a cover's OPEN/CLOSE/STOP, a thermostat's
    /// modes, a select's options).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// `config` (a setting) or `diagnostic`: shown apart from what the device is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// `POST /api/devices/{id}/command`: sets one of a device's values now (a switch, a light,
/// a thermostat's target), as a rule's MQTT action would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendCommand {
    pub metric: String,
    pub value: Value,
}

/// Where a command went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSent {
    pub topic: String,
    /// What became of it at once.
    #[serde(default)]
    pub delivery: Delivery,
}

/// What became of a command when it was sent; whether the device did it, its next report
/// says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Handed to an external broker, which says no more.
    #[default]
    Sent,
    /// Handed to the device (or its bridge), connected now.
    Delivered,
    /// Kept for a sleeping device, until its session comes back.
    Queued,
    /// Nothing of the device is connected or waiting for it: it will not hear this.
    Unheard,
}

names!(Delivery, "delivery", { Sent => "sent", Delivered => "delivered", Queued => "queued", Unheard => "unheard" });

/// `PUT /api/devices/{id}/bridge`: the topic namespaces (MQTT filters such as
/// `zigbee2mqtt/#` or `tele/kitchen-plug/#`) the device may publish in for the devices
/// behind it; an empty list makes it an ordinary device again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetNamespaces {
    pub namespaces: Vec<String>,
}

/// `POST /api/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    pub name: String,
}

/// A device's new credentials, shown once, with commands to paste.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub id: String,
    pub secret: String,
    /// Present when the hub takes MQTT.
    pub mqtt: Option<MqttExample>,
    /// Present when the hub takes CoAP over DTLS.
    pub coap: Option<CoapExample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttExample {
    pub host: String,
    pub port: u16,
    /// Whether `port` takes TLS; the device then needs the hub's CA certificate.
    pub tls: bool,
    /// Where to download the CA certificate (`--cafile`), when `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_url: Option<String>,
    /// The plain MQTT port, for a device the owner marks as unable to do TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_port: Option<u16>,
    pub username: String,
    pub topic: String,
    pub mosquitto_pub: String,
    pub mosquitto_pub_json: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoapExample {
    pub uri: String,
    pub coap_client: String,
}

/// `PUT /api/devices/{id}/coap-address`: where the device serves CoAP, an IP address with
/// an optional port (5683 if none); `null` takes it away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCoapAddress {
    pub address: Option<String>,
}

/// `PUT /api/devices/{id}/plaintext`: whether the device may use plain MQTT, for devices
/// that cannot do TLS. Only its manager sets it; it is in the security log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPlaintext {
    pub plaintext: bool,
}

/// `GET /api/tls`: how the hub is reached securely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// SHA-256 fingerprint of the certificate authority to trust (`AB:CD:...`), as the hub
    /// prints it at start; `None` when the hub serves no TLS.
    pub fingerprint: Option<String>,
    /// Whether the certificate is the owner's own rather than from the hub's CA.
    pub own_certificate: bool,
    /// The MQTT over TLS port, if the embedded server takes it.
    pub mqtts_port: Option<u16>,
}

/// `PUT /api/devices/{id}/class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetClass {
    pub class: DeviceClass,
}

/// A class change: the moment from which it applies, or, while a tenancy runs and the
/// change would take the tenant's readings, the proposal that waits for their agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassChanged {
    pub class: DeviceClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<i64>,
}

/// Where a proposed class change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposalStatus {
    Pending,
    Accepted,
    Declined,
}

names!(ProposalStatus, "proposal status", { Pending => "pending", Accepted => "accepted", Declined => "declined" });

/// The owner asks the tenant to let a household device become a building device (its
/// readings then the owner's, from when the tenant agrees): `GET /api/class-proposals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassProposal {
    pub id: i64,
    pub device: String,
    pub device_name: String,
    pub class: DeviceClass,
    pub tenancy: i64,
    pub created: i64,
    pub status: ProposalStatus,
    pub decided: Option<i64>,
}

/// The query of `GET /api/devices/{id}/metrics/{metric}/readings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// Start, ms since the epoch (inclusive). Default: 24 h before `to`.
    pub from: Option<i64>,
    /// End, ms since the epoch (exclusive). Default: now.
    pub to: Option<i64>,
    /// Summarise into at most this many buckets.
    pub points: Option<usize>,
}

/// One raw reading of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub ts: i64,
    pub value: Value,
}

/// A metric's readings over `[from, to)`: raw, or in buckets when `points` was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readings {
    pub device: String,
    pub metric: String,
    pub from: i64,
    pub to: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readings: Option<Vec<Point>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<Bucket>>,
    /// True if the range held more than the hub returns raw; ask for `points`.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_wire_names() -> Result<(), serde_json::Error> {
        for b in BelongsTo::ALL {
            assert_eq!(serde_json::to_string(b)?, format!("\"{b}\""));
        }
        for p in ProposalStatus::ALL {
            assert_eq!(serde_json::to_string(p)?, format!("\"{p}\""));
        }
        for k in DeviceKind::ALL {
            assert_eq!(serde_json::to_string(k)?, format!("\"{k}\""));
        }
        for d in Delivery::ALL {
            assert_eq!(serde_json::to_string(d)?, format!("\"{d}\""));
        }
        Ok(())
    }
}
