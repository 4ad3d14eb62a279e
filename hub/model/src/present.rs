//! How a device and its values read to the people of the home: the names they chose,
//! rooms, state words by device class, units and display precision. The web UI shows
//! devices only through this, so every card, page and picker says the same thing.

use crate::Value;
use crate::devices::{Device, DeviceKind, DiscoveredValue, Metric};

/// Where devices without a room are listed.
pub const NO_ROOM: &str = "Other devices";

/// Longest value shown whole on a card; longer ones are cut, the whole in their title.
pub const SHORT: usize = 16;

/// The devices people live with (not bridges), by room (whatever its case): rooms in
/// alphabetical order, then those without one; within a room, favourites first, then by
/// name.
pub fn by_room(devices: &[Device]) -> Vec<(String, Vec<Device>)> {
    let mut rooms: Vec<(String, Vec<Device>)> = Vec::new();
    for d in devices.iter().filter(|d| d.kind == DeviceKind::Device) {
        let room = d.room.clone().unwrap_or_else(|| NO_ROOM.to_owned());
        // "kitchen" and "Kitchen" are one room, under the spelling met first.
        match rooms.iter_mut().find(|(r, _)| r.to_lowercase() == room.to_lowercase()) {
            Some((_, list)) => list.push(d.clone()),
            None => rooms.push((room, vec![d.clone()])),
        }
    }
    sort_by_text(&mut rooms, |(room, _)| format!("{}{}", u8::from(room == NO_ROOM), room.to_lowercase()));
    for (_, list) in &mut rooms {
        sort_by_text(list, |d| format!("{}{}", u8::from(!d.favourite), d.name.to_lowercase()));
    }
    rooms
}

/// Orders `items` by a text key, stably (equal keys keep their order). Every list the UI
/// orders goes through this one function: each `sort_by_key` with its own closure compiles
/// into its own copy of the standard sort, about 4 KB of the page's wasm apiece.
pub fn sort_by_text<T>(items: &mut Vec<T>, key: impl Fn(&T) -> String) {
    // The position breaks ties, so an unstable sort of the pairs keeps equal keys in order.
    let mut keyed: Vec<(String, usize)> = items.iter().map(key).zip(0..).collect();
    keyed.sort_unstable();
    let mut slots: Vec<Option<T>> = std::mem::take(items).into_iter().map(Some).collect();
    items.extend(keyed.into_iter().filter_map(|(_, at)| slots.get_mut(at).and_then(Option::take)));
}

/// What its device said of one of its values.
pub fn described<'a>(device: &'a Device, metric: &str) -> Option<&'a DiscoveredValue> {
    device.discovered.as_ref()?.values.iter().find(|v| v.metric == metric)
}

/// Plumbing of a connection that a device reports alongside its values: how well it
/// hears, whether it is online (said apart, as "Unavailable").
const DIAGNOSTIC_KEYS: [&str; 6] = ["linkquality", "online", "rssi", "last_seen", "update_available", "uptime"];

/// A setting or a diagnostic (its device's category, or plumbing such as Zigbee's link
/// quality), or a value people hid: folded apart from what the device is for.
pub fn diagnostic(device: &Device, metric: &str) -> bool {
    device.hidden_values.iter().any(|m| m == metric)
        || described(device, metric).is_some_and(|v| v.category.is_some())
        || DIAGNOSTIC_KEYS.contains(&metric.rsplit('.').next().unwrap_or(metric).to_ascii_lowercase().as_str())
        || class(device, metric).as_deref() == Some("signal_strength")
}

/// Whether a value has an On/Off control, which shows its state.
pub fn switched(device: &Device, metric: &str) -> bool {
    described(device, metric).is_some_and(|v| v.settable && v.on_off)
}

/// What a value is called: the name people gave it, else its device's name for it, else
/// its key in words (`switch_0.aenergy.total` reads "Switch 0 aenergy total").
pub fn label(device: &Device, metric: &str) -> String {
    if let Some(name) = device.labels.get(metric) {
        return name.clone();
    }
    if let Some(name) = described(device, metric).and_then(|v| v.name.clone()) {
        return name;
    }
    words(metric)
}

/// A key in words: separators as spaces, the first letter a capital.
pub fn words(key: &str) -> String {
    let spaced: String = key.chars().map(|c| if matches!(c, '_' | '.' | '-' | ':') { ' ' } else { c }).collect();
    let mut chars = spaced.trim().chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Its Home Assistant device class, as its device described it or as its key says.
pub fn class(device: &Device, metric: &str) -> Option<String> {
    if let Some(class) = described(device, metric).and_then(|v| v.class.clone()) {
        return Some(class);
    }
    let key = metric.rsplit('.').next().unwrap_or(metric).to_ascii_lowercase();
    let known = [
        "temperature",
        "humidity",
        "battery",
        "power",
        "energy",
        "voltage",
        "current",
        "illuminance",
        "pressure",
        "co2",
        "occupancy",
        "motion",
        "contact",
        "online",
    ];
    known.iter().find(|k| key == **k).map(|k| match *k {
        "pressure" => "atmospheric_pressure".to_owned(),
        "co2" => "carbon_dioxide".to_owned(),
        "contact" => "door".to_owned(),
        "online" => "connectivity".to_owned(),
        k => k.to_owned(),
    })
}

/// The words for on and off of a binary value of `class` (Home Assistant's meaning: on is
/// open, wet, detected, low, unlocked).
pub fn state_words(class: Option<&str>) -> (&'static str, &'static str) {
    match class.unwrap_or_default() {
        "door" | "garage_door" | "window" | "opening" => ("Open", "Closed"),
        "moisture" => ("Wet", "Dry"),
        "motion" | "occupancy" | "smoke" | "gas" | "carbon_monoxide" | "sound" | "vibration" => ("Detected", "Clear"),
        "presence" => ("Home", "Away"),
        "lock" => ("Unlocked", "Locked"),
        "battery" => ("Low", "Normal"),
        "battery_charging" => ("Charging", "Not charging"),
        "connectivity" => ("Connected", "Disconnected"),
        "plug" => ("Plugged in", "Unplugged"),
        "problem" | "safety" => ("Problem", "OK"),
        "tamper" => ("Tampering", "Clear"),
        "moving" => ("Moving", "Still"),
        "running" => ("Running", "Not running"),
        "light" => ("Light", "Dark"),
        "heat" => ("Hot", "Normal"),
        "cold" => ("Cold", "Normal"),
        "update" => ("Update available", "Up to date"),
        _ => ("On", "Off"),
    }
}

/// Digits after the point: as its device asked, else what its class reads best with.
pub fn precision(device: &Device, metric: &str) -> Option<usize> {
    if let Some(p) = described(device, metric).and_then(|v| v.precision) {
        return Some(usize::from(p));
    }
    Some(match class(device, metric)?.as_str() {
        "temperature" | "voltage" => 1,
        "energy" | "current" => 2,
        "humidity"
        | "moisture"
        | "battery"
        | "power"
        | "illuminance"
        | "atmospheric_pressure"
        | "carbon_dioxide"
        | "signal_strength" => 0,
        _ => return None,
    })
}

/// Its unit, as reported or else as its device described it.
pub fn unit(device: &Device, metric: &str) -> Option<String> {
    let reported = device.metrics.iter().find(|m| m.metric == metric).and_then(|m| m.unit.clone());
    reported.or_else(|| described(device, metric).and_then(|v| v.unit.clone()))
}

/// A value as people read it: a state word for a binary value, a number at its precision
/// with its unit, text as it is. Numbers are written as `plain_number` does; the browser
/// passes its own locale's writing to [`value_in`].
pub fn value(device: &Device, metric: &str, value: &Value) -> String {
    value_in(device, metric, value, plain_number)
}

/// A number with `digits` after the point, or as it came (to three decimals) when nothing
/// says how many: `21.50`, `1500`.
pub fn plain_number(n: f64, digits: Option<usize>) -> String {
    match digits {
        Some(p) => format!("{n:.p$}"),
        None => Value::Number(n).show(),
    }
}

/// [`value`], with numbers written by `number(n, digits)` (the browser's locale: `21,50`).
pub fn value_in(device: &Device, metric: &str, value: &Value, number: impl Fn(f64, Option<usize>) -> String) -> String {
    let class = class(device, metric);
    let shown = match value {
        Value::Bool(b) => {
            let (on, off) = state_words(class.as_deref());
            return (if *b { on } else { off }).to_owned();
        }
        Value::Number(n) => number(*n, precision(device, metric)),
        _ => value.show(),
    };
    match unit(device, metric) {
        Some(unit) if matches!(value, Value::Number(_)) => format!("{shown} {unit}"),
        _ => shown,
    }
}

/// Whether a value is old news at `now`: its device has said nothing for three of its
/// usual intervals, and for at least a minute longer than one. A value without an interval
/// yet (it reported once) is never old.
pub fn stale(metric: &Metric, now: i64) -> bool {
    metric.every.is_some_and(|every| {
        let every = every.max(1_000);
        now - metric.ts > (3 * every).max(every + 60_000)
    })
}

/// `text` cut to `SHORT` characters with an ellipsis, and whether it was.
pub fn short(text: &str) -> (String, bool) {
    match text.chars().count() > SHORT {
        true => (text.chars().take(SHORT - 1).chain(['…']).collect(), true),
        false => (text.to_owned(), false),
    }
}

/// Its battery level in percent, where it reports one.
pub fn battery(device: &Device) -> Option<f64> {
    device.metrics.iter().find_map(|m| match (class(device, &m.metric).as_deref(), &m.value) {
        (Some("battery"), Value::Number(n)) => Some(*n),
        _ => None,
    })
}

/// Below this a battery is low.
pub const LOW_BATTERY: f64 = 15.0;

/// The values a device reported or announced, for pickers: (metric, label, unit), what it
/// takes as commands only with `settable`.
pub fn metrics(device: &Device, settable: bool) -> Vec<(String, String, Option<String>)> {
    let described: Vec<&DiscoveredValue> = device.discovered.iter().flat_map(|d| d.values.iter()).collect();
    let mut keys: Vec<String> = match settable {
        true if !described.is_empty() => described.iter().filter(|v| v.settable).map(|v| v.metric.clone()).collect(),
        true => device.metrics.iter().map(|m| m.metric.clone()).collect(),
        false => {
            device.metrics.iter().map(|m| m.metric.clone()).chain(described.iter().map(|v| v.metric.clone())).collect()
        }
    };
    sort_by_text(&mut keys, String::clone);
    keys.dedup();
    keys.into_iter().map(|k| (label(device, &k), unit(device, &k), k)).map(|(l, u, k)| (k, l, u)).collect()
}

/// The values a command to `metric` takes, where they are few: on/off, or a list.
pub fn choices(device: &Device, metric: &str) -> Vec<String> {
    match described(device, metric) {
        Some(v) if v.on_off => vec!["on".into(), "off".into()],
        Some(v) => v.options.clone(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_words() {
        assert_eq!(words("switch_0.aenergy.total"), "Switch 0 aenergy total");
        assert_eq!(words("ENERGY.ApparentPower"), "ENERGY ApparentPower");
        assert_eq!(words(""), "");
    }

    #[test]
    fn text_order_is_stable_and_keeps_every_item() {
        let mut items = vec![(3, "b"), (1, "a"), (2, "b"), (4, "a"), (5, "c")];
        sort_by_text(&mut items, |(_, k)| (*k).to_owned());
        assert_eq!(items, [(1, "a"), (4, "a"), (3, "b"), (2, "b"), (5, "c")]);
        let mut empty: Vec<u8> = Vec::new();
        sort_by_text(&mut empty, u8::to_string);
        assert!(empty.is_empty());
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(short("953312.477"), ("953312.477".to_owned(), false));
        let (cut, was) = short("2026-12-07T03:55:12.123456Z");
        assert!(was && cut.ends_with('…') && cut.chars().count() == SHORT, "{cut}");
    }

    /// A device as the hub lists it, with `extra` fields.
    fn device(id: &str, extra: serde_json::Value) -> Device {
        let mut json = serde_json::json!({
            "id": id, "name": id, "created": 0, "credentials_changed": 0, "class": "household",
            "belongs_to": "owner", "manageable": true, "metrics": []
        });
        if let (Some(to), Some(from)) = (json.as_object_mut(), extra.as_object()) {
            to.extend(from.clone());
        }
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rooms_group_whatever_their_case_and_bridges_are_left_out() {
        let devices = [
            device("b", serde_json::json!({ "room": "kitchen" })),
            device("a", serde_json::json!({ "room": "Kitchen", "favourite": true })),
            device("c", serde_json::json!({})),
            device("z2m", serde_json::json!({ "kind": "bridge" })),
            device("d", serde_json::json!({ "room": "Attic" })),
        ];
        let rooms: Vec<(String, Vec<String>)> =
            by_room(&devices).into_iter().map(|(r, list)| (r, list.into_iter().map(|d| d.id).collect())).collect();
        let expected = [("Attic", vec!["d"]), ("kitchen", vec!["a", "b"]), (NO_ROOM, vec!["c"])];
        let expected: Vec<(String, Vec<String>)> =
            expected.iter().map(|(r, l)| (r.to_string(), l.iter().map(|x| x.to_string()).collect())).collect();
        assert_eq!(rooms, expected);
    }

    #[test]
    fn link_quality_and_online_are_diagnostics() {
        let device = device("plug", serde_json::json!({}));
        assert!(
            diagnostic(&device, "linkquality") && diagnostic(&device, "online") && diagnostic(&device, "wifi.rssi")
        );
        assert!(!diagnostic(&device, "power") && !diagnostic(&device, "temperature"));
    }

    #[test]
    fn numbers_are_written_as_the_caller_writes_them() {
        let device = device(
            "t",
            serde_json::json!({ "metrics": [
            { "metric": "temperature", "unit": "°C", "ts": 1, "value": 21.456 }
        ] }),
        );
        let reading = Value::Number(21.456);
        assert_eq!(value(&device, "temperature", &reading), "21.5 °C");
        let comma = |n: f64, digits: Option<usize>| plain_number(n, digits).replace('.', ",");
        assert_eq!(value_in(&device, "temperature", &reading, comma), "21,5 °C");
        assert_eq!(plain_number(1500.0, None), "1500");
        assert_eq!(plain_number(0.12345, None), "0.123");
    }

    #[test]
    fn a_value_is_old_after_three_silent_intervals() {
        let reading = |ts: i64, every: Option<i64>| Metric {
            metric: "temperature".into(),
            unit: None,
            ts,
            value: Value::Number(20.0),
            every,
        };
        let minute = 60_000;
        // Every 10 min: old after 30 min of silence, not before.
        assert!(!stale(&reading(0, Some(10 * minute)), 30 * minute));
        assert!(stale(&reading(0, Some(10 * minute)), 30 * minute + 1));
        // Every 5 s: three intervals are too short to mean anything; a minute more is.
        assert!(!stale(&reading(0, Some(5_000)), 60_000));
        assert!(stale(&reading(0, Some(5_000)), 65_001));
        // Reported once: no interval to go by.
        assert!(!stale(&reading(0, None), 1_000 * minute));
    }

    #[test]
    fn doors_open_and_close() {
        assert_eq!(state_words(Some("door")), ("Open", "Closed"));
        assert_eq!(state_words(Some("moisture")), ("Wet", "Dry"));
        assert_eq!(state_words(None), ("On", "Off"));
    }
}
