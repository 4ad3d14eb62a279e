//! Devices that announce themselves: Home Assistant MQTT discovery and the conventions of
//! the ecosystems homes use (Zigbee2MQTT, Tasmota, Shelly, ESPHome). Pure parsing, no I/O:
//! what a message says a device is, and how to read its values. It must not touch SQL.

pub mod ha;
pub mod native;

/// Most values one device keeps. The largest of Zigbee2MQTT's own definitions (zigbee-
/// herdsman-converters 26.112: Danfoss's Icon2 floor-heating controller, 15 zones) has
/// 276; past this, the rest of a description is left out.
pub const MAX_VALUES: usize = 320;

/// A message of the corpus in `hub/tests/data/ecosystems` (see its INDEX.md): its topic,
/// and its payload from `<name>.json` or `<name>.txt`.
#[cfg(test)]
fn corpus(name: &str) -> (String, Vec<u8>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ecosystems");
    let topic = std::fs::read_to_string(dir.join(format!("{name}.topic"))).unwrap_or_default();
    let payload = std::fs::read(dir.join(format!("{name}.json")))
        .or_else(|_| std::fs::read(dir.join(format!("{name}.txt"))))
        .unwrap_or_default();
    (topic.trim().to_owned(), payload)
}
pub mod template;
pub mod zigbee2mqtt;
