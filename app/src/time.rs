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

/// Local time of day only (hh:mm).
pub fn clock(ts: i64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ts as f64));
    format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
}
