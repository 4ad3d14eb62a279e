//! Devices that announce themselves: Home Assistant MQTT discovery and the conventions of
//! the ecosystems homes use (Zigbee2MQTT, Tasmota, Shelly, ESPHome). Pure parsing, no I/O:
//! what a message says a device is, and how to read its values. It must not touch SQL.

pub mod ha;
pub mod native;
pub mod template;
pub mod zigbee2mqtt;
