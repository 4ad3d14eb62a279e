//! Clock and time formatting in the browser.

use wasm_bindgen::JsValue;

/// Milliseconds since the epoch, from the browser's clock.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// "12 s ago", "5 min ago", "3 h ago", or a date.
pub fn ago(ts: i64, now: i64) -> String {
    let s = (now - ts).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => local(ts),
    }
}

/// Local date and time, as the browser formats it.
pub fn local(ts: i64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ts as f64));
    String::from(date.to_locale_string("default", &JsValue::UNDEFINED))
}

/// Local time of day only (hours and minutes, as the browser's locale writes them).
pub fn clock(ts: i64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ts as f64));
    let options = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&options, &"hour".into(), &"2-digit".into());
    let _ = js_sys::Reflect::set(&options, &"minute".into(), &"2-digit".into());
    String::from(date.to_locale_time_string_with_options("default", &options))
}

/// A number as the browser's locale writes it (`1,234.5`, `1.234,5`), with `digits` after
/// the point when the device says how many, else at most three.
pub fn number(n: f64, digits: Option<usize>) -> String {
    let options = js_sys::Object::new();
    let (least, most) = digits.map_or((0.0, 3.0), |d| (d as f64, d as f64));
    let _ = js_sys::Reflect::set(&options, &"minimumFractionDigits".into(), &least.into());
    let _ = js_sys::Reflect::set(&options, &"maximumFractionDigits".into(), &most.into());
    let format = js_sys::Intl::NumberFormat::new(&js_sys::Array::new(), &options).format();
    format
        .call1(&JsValue::NULL, &JsValue::from_f64(n))
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| n.to_string())
}

/// A value as people read it, numbers in the browser's locale.
pub fn shown(device: &hearth_model::devices::Device, metric: &str, value: &hearth_model::Value) -> String {
    hearth_model::present::value_in(device, metric, value, number)
}
