//! Turns what a device sent (a topic or path, and payload bytes) into readings.
//! Pure functions: no I/O, no clock (the caller passes `now`), no knowledge of protocols
//! beyond the names Hearth gives its topics.

use serde_json::{Map, Value as Json};

use crate::reading::{MAX_TEXT_LEN, Reading, Value, valid_metric, valid_unit};

/// Largest payload accepted for one message.
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// Most metrics in one multi-metric message.
pub const MAX_METRICS_PER_MESSAGE: usize = 64;
/// Device timestamps may run ahead of the hub's clock by this much (clock skew).
const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;
/// 2000-01-01T00:00:00Z: older timestamps are a device clock that was never set.
const MIN_TS_MS: i64 = 946_684_800_000;

/// Why a message was not stored. Shown to the device (CoAP diagnostic) or logged (MQTT).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is empty")]
    Empty,
    #[error("payload is {0} bytes, more than the {MAX_PAYLOAD} allowed")]
    TooLarge(usize),
    #[error("payload is not UTF-8 text")]
    NotUtf8,
    #[error("invalid metric name {0:?}: use 1-64 letters, digits, '_', '.' or '-'")]
    BadMetric(String),
    #[error("number is not finite")]
    NotFinite,
    #[error("text value is longer than {MAX_TEXT_LEN} characters")]
    TextTooLong,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("JSON value for {0:?} must be a number, true/false or a string")]
    BadValue(String),
    #[error("\"value\" is missing")]
    MissingValue,
    #[error("invalid unit: use up to 16 printable characters")]
    BadUnit,
    #[error("\"ts\" must be Unix time in seconds or milliseconds, between 2000 and one day ahead")]
    BadTimestamp,
    #[error("message carries no metrics")]
    NoMetrics,
    #[error("message carries more than {MAX_METRICS_PER_MESSAGE} metrics")]
    TooManyMetrics,
}

/// Decodes the payload of one metric (`hearth/<device>/<metric>`, `/d/<device>/<metric>`):
/// a bare number, `true`/`false`, text, or `{"value":..,"unit":"..","ts":..}`.
pub fn decode_metric(device: &str, metric: &str, payload: &[u8], now: i64) -> Result<Reading, DecodeError> {
    if !valid_metric(metric) {
        return Err(DecodeError::BadMetric(metric.to_owned()));
    }
    let text = payload_text(payload)?;
    let (value, unit, ts) = if text.starts_with('{') {
        let object = parse_object(text)?;
        let value = object.get("value").ok_or(DecodeError::MissingValue)?;
        let value = json_value(metric, value)?.ok_or_else(|| DecodeError::BadValue(metric.to_owned()))?;
        (value, unit_of(&object)?, ts_of(&object, now)?)
    } else if text.starts_with('"') {
        let s: String = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
        (text_value(s)?, None, now)
    } else {
        (bare_value(text)?, None, now)
    };
    Ok(Reading { device: device.to_owned(), metric: metric.to_owned(), ts, value, unit })
}

/// Decodes a multi-metric object (`hearth/<device>`), as Tasmota and Zigbee2MQTT send:
/// `{"temperature":21.5,"humidity":40}`. Nested objects are flattened with `.`
/// (`{"energy":{"total":1.2}}` -> `energy.total`); nulls and arrays are skipped; an optional
/// top-level `"ts"` stamps every reading.
pub fn decode_object(device: &str, payload: &[u8], now: i64) -> Result<Vec<Reading>, DecodeError> {
    let object = parse_object(payload_text(payload)?)?;
    let ts = ts_of(&object, now)?;
    let mut readings = Vec::new();
    flatten(device, "", &object, (ts, MAX_METRICS_PER_MESSAGE), 0, &mut readings, None)?;
    if readings.is_empty() {
        return Err(DecodeError::NoMetrics);
    }
    Ok(readings)
}

/// A device's whole state as its ecosystem publishes it through a bridge (a Zigbee2MQTT
/// device's, which can hold a few hundred values), already parsed: up to `max_metrics`
/// values at `ts`, and a key that is not a metric name or a value Hearth cannot store is
/// left out, and named in the list returned, instead of refusing the whole message. Its
/// own `ts` is not read.
pub fn relayed_readings(
    device: &str,
    object: &Map<String, Json>,
    ts: i64,
    max_metrics: usize,
) -> Result<(Vec<Reading>, Vec<String>), DecodeError> {
    let (mut readings, mut left_out) = (Vec::new(), Vec::new());
    flatten(device, "", object, (ts, max_metrics), 0, &mut readings, Some(&mut left_out))?;
    if readings.is_empty() {
        return Err(left_out.pop().map_or(DecodeError::NoMetrics, DecodeError::BadMetric));
    }
    Ok((readings, left_out))
}

/// Flattens `object` into `out`, up to `max` readings at `ts`. With `left_out`, a key or
/// value that cannot be stored is noted there and skipped; without, it refuses the message.
fn flatten(
    device: &str,
    prefix: &str,
    object: &Map<String, Json>,
    (ts, max): (i64, usize),
    depth: usize,
    out: &mut Vec<Reading>,
    mut left_out: Option<&mut Vec<String>>,
) -> Result<(), DecodeError> {
    for (key, value) in object {
        if depth == 0 && key == "ts" {
            continue;
        }
        let metric = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            Json::Object(inner) if depth < 2 => {
                flatten(device, &metric, inner, (ts, max), depth + 1, out, left_out.as_deref_mut())?;
            }
            Json::Null | Json::Array(_) | Json::Object(_) => {}
            _ => {
                let value = match valid_metric(&metric) {
                    true => json_value(&metric, value),
                    false => Err(DecodeError::BadMetric(metric.clone())),
                };
                let value = match value {
                    Ok(Some(_)) if out.len() == max => Err(DecodeError::TooManyMetrics),
                    other => other,
                };
                match (value, left_out.as_deref_mut()) {
                    (Ok(Some(value)), _) => {
                        out.push(Reading { device: device.to_owned(), metric, ts, value, unit: None })
                    }
                    (Ok(None), _) => {}
                    (Err(_), Some(left_out)) => {
                        if left_out.len() < 16 {
                            left_out.push(metric.chars().take(64).collect());
                        }
                    }
                    (Err(error), None) => return Err(error),
                }
            }
        }
    }
    Ok(())
}

fn payload_text(payload: &[u8]) -> Result<&str, DecodeError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?.trim();
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(text)
}

fn parse_object(text: &str) -> Result<Map<String, Json>, DecodeError> {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(DecodeError::Json("expected a JSON object".into())),
        Err(e) => Err(DecodeError::Json(e.to_string())),
    }
}

fn bare_value(text: &str) -> Result<Value, DecodeError> {
    match text {
        "true" | "on" | "ON" => return Ok(Value::Bool(true)),
        "false" | "off" | "OFF" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if let Ok(n) = text.parse::<f64>() {
        // `parse` accepts "inf" and "NaN": a sensor value never is.
        return if n.is_finite() { Ok(Value::Number(n)) } else { Err(DecodeError::NotFinite) };
    }
    text_value(text.to_owned())
}

fn text_value(s: String) -> Result<Value, DecodeError> {
    if s.chars().count() > MAX_TEXT_LEN {
        return Err(DecodeError::TextTooLong);
    }
    Ok(Value::Text(s))
}

/// `Ok(None)` for JSON null (skipped), an error for arrays and objects.
pub(crate) fn json_value(metric: &str, v: &Json) -> Result<Option<Value>, DecodeError> {
    match v {
        Json::Bool(b) => Ok(Some(Value::Bool(*b))),
        Json::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(Value::Number(f))),
            _ => Err(DecodeError::NotFinite),
        },
        Json::String(s) => text_value(s.clone()).map(Some),
        Json::Null => Ok(None),
        _ => Err(DecodeError::BadValue(metric.to_owned())),
    }
}

fn unit_of(object: &Map<String, Json>) -> Result<Option<String>, DecodeError> {
    match object.get("unit") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(u)) if valid_unit(u) => Ok(Some(u.clone())),
        Some(_) => Err(DecodeError::BadUnit),
    }
}

/// `ts` in seconds (as most devices send) or milliseconds, told apart by magnitude.
fn ts_of(object: &Map<String, Json>, now: i64) -> Result<i64, DecodeError> {
    let Some(ts) = object.get("ts") else { return Ok(now) };
    let raw = ts.as_f64().filter(|f| f.is_finite()).ok_or(DecodeError::BadTimestamp)?;
    let ms = if raw.abs() < 1e11 { raw * 1000.0 } else { raw };
    let ms = ms.round() as i64;
    if !(MIN_TS_MS..=now.saturating_add(MAX_FUTURE_MS)).contains(&ms) {
        return Err(DecodeError::BadTimestamp);
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000_000;

    fn one(payload: &str) -> Result<Reading, DecodeError> {
        decode_metric("dev1", "temperature", payload.as_bytes(), NOW)
    }

    #[test]
    fn bare_payloads() {
        assert_eq!(one("21.5").unwrap().value, Value::Number(21.5));
        assert_eq!(one(" -3 \n").unwrap().value, Value::Number(-3.0));
        assert_eq!(one("true").unwrap().value, Value::Bool(true));
        assert_eq!(one("OFF").unwrap().value, Value::Bool(false));
        assert_eq!(one("open").unwrap().value, Value::Text("open".into()));
        assert_eq!(one("\"21\"").unwrap().value, Value::Text("21".into()));
        assert_eq!(one("21.5").unwrap().ts, NOW);
    }

    #[test]
    fn json_payloads() {
        let r = one(r#"{"value":21.5,"unit":"°C","ts":1780000000}"#).unwrap();
        assert_eq!(r.value, Value::Number(21.5));
        assert_eq!(r.unit.as_deref(), Some("°C"));
        assert_eq!(r.ts, 1_780_000_000_000);
        assert_eq!(one(r#"{"value":1,"ts":1780000000123}"#).unwrap().ts, 1_780_000_000_123);
    }

    #[test]
    fn malformed_payloads_are_rejected_with_a_reason() {
        assert_eq!(one(""), Err(DecodeError::Empty));
        assert_eq!(one("NaN"), Err(DecodeError::NotFinite));
        assert_eq!(one("inf"), Err(DecodeError::NotFinite));
        assert_eq!(one(r#"{"unit":"C"}"#), Err(DecodeError::MissingValue));
        assert!(matches!(one(r#"{"value":1"#), Err(DecodeError::Json(_))));
        assert_eq!(one(r#"{"value":[1]}"#), Err(DecodeError::BadValue("temperature".into())));
        assert_eq!(one(r#"{"value":1,"ts":12}"#), Err(DecodeError::BadTimestamp));
        assert_eq!(one(r#"{"value":1,"ts":"yesterday"}"#), Err(DecodeError::BadTimestamp));
        assert_eq!(one(r#"{"value":1,"unit":"\u0007"}"#), Err(DecodeError::BadUnit));
        assert_eq!(one(&"x".repeat(300)), Err(DecodeError::TextTooLong));
        assert_eq!(
            decode_metric("d", "t", &vec![b'1'; MAX_PAYLOAD + 1], NOW),
            Err(DecodeError::TooLarge(MAX_PAYLOAD + 1))
        );
        assert_eq!(decode_metric("d", "t", &[0xff, 0xfe], NOW), Err(DecodeError::NotUtf8));
        assert_eq!(decode_metric("d", "a b", b"1", NOW), Err(DecodeError::BadMetric("a b".into())));
    }

    #[test]
    fn multi_metric_objects() {
        let rs = decode_object(
            "dev1",
            br#"{"temperature":21.5,"humidity":40,"ts":1780000000,"energy":{"total":1.25},"update":null,"list":[1]}"#,
            NOW,
        )
        .unwrap();
        let got: Vec<(&str, &Value)> = rs.iter().map(|r| (r.metric.as_str(), &r.value)).collect();
        assert_eq!(
            got,
            vec![
                ("energy.total", &Value::Number(1.25)),
                ("humidity", &Value::Number(40.0)),
                ("temperature", &Value::Number(21.5)),
            ]
        );
        assert!(rs.iter().all(|r| r.ts == 1_780_000_000_000));
        assert_eq!(decode_object("d", b"{}", NOW), Err(DecodeError::NoMetrics));
        assert!(matches!(decode_object("d", b"[1,2]", NOW), Err(DecodeError::Json(_))));
        assert_eq!(decode_object("d", br#"{"a b":1}"#, NOW), Err(DecodeError::BadMetric("a b".into())));
        let many: String = (0..65).map(|i| format!("\"m{i}\":1")).collect::<Vec<_>>().join(",");
        assert_eq!(decode_object("d", format!("{{{many}}}").as_bytes(), NOW), Err(DecodeError::TooManyMetrics));
    }

    /// A device's whole state relayed by its bridge: a key that cannot be a metric is left
    /// out and named, the rest is kept; more values than the limit are left out likewise.
    #[test]
    fn a_relayed_state_keeps_what_it_can_and_names_the_rest() {
        let relayed = |state: &str, max| {
            let object = parse_object(state).unwrap_or_default();
            relayed_readings("d", &object, NOW, max)
        };
        let state = r#"{"temperature":21.5,"ntc status":"ok","color":{"x":0.3,"y":0.4},"update":{"state":"idle"}}"#;
        let (readings, left_out) = relayed(state, 320).unwrap();
        let metrics: Vec<&str> = readings.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(metrics, ["color.x", "color.y", "temperature", "update.state"]);
        assert_eq!(left_out, ["ntc status"]);
        let many: String = (0..300).map(|i| format!("\"m{i}\":1")).collect::<Vec<_>>().join(",");
        let (readings, left_out) = relayed(&format!("{{{many}}}"), 280).unwrap();
        assert_eq!((readings.len(), left_out.len()), (280, 16));
        assert_eq!(relayed(r#"{"a b":1}"#, 8), Err(DecodeError::BadMetric("a b".into())));
    }
}
