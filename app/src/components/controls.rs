//! Controls for what a device takes as commands (On/Off, a number, a choice from a list),
//! each saying what became of its command: sending, queued until the device wakes,
//! confirmed by the device's next report, or no answer within [`ANSWER_WITHIN`].

use std::time::Duration;

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use hearth_model::Value;
use hearth_model::devices::{Delivery, Device};
use hearth_model::present;

use crate::api;
use crate::app::Home;

/// How long a control waits for the device to report the value it was sent.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Where one control's last command stands.
#[derive(Debug, Clone, PartialEq)]
enum Feedback {
    Idle,
    /// Sent, waiting for the device to report it (from the report it had then, by time).
    Pending {
        wanted: Value,
        before: Option<i64>,
        attempt: u32,
    },
    Confirmed,
    Queued,
    NoAnswer,
    /// Nothing of the device is connected to hear it.
    Unheard,
    Failed(String),
}

impl Feedback {
    fn words(&self) -> Option<(&'static str, String)> {
        Some(match self {
            Feedback::Idle => return None,
            Feedback::Pending { .. } => ("pending", "Sending…".to_owned()),
            Feedback::Confirmed => ("confirmed", "Done".to_owned()),
            Feedback::Queued => ("queued", "Queued until the device wakes".to_owned()),
            Feedback::NoAnswer => {
                ("no-answer", format!("No answer from the device within {} s", ANSWER_WITHIN.as_secs()))
            }
            Feedback::Unheard => ("no-answer", "The device is not connected: it did not get this".to_owned()),
            Feedback::Failed(e) => ("failed", e.clone()),
        })
    }
}

/// Whether a reported value is the one a command asked for.
fn same(wanted: &Value, reported: &Value) -> bool {
    match (wanted, reported) {
        (Value::Number(a), Value::Number(b)) => (a - b).abs() < 1e-6,
        (Value::Text(a), Value::Text(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a == b,
    }
}

/// One control's feedback, following the device's reports.
fn feedback(home: Home, device: String, metric: String) -> (RwSignal<Feedback>, impl Fn(Value) + Clone + 'static) {
    let state = RwSignal::new(Feedback::Idle);
    let attempts = StoredValue::new(0u32);
    // Confirmed when a report newer than the one before the command says what it asked.
    let (d, m) = (device.clone(), metric.clone());
    Effect::new(move |_| {
        let latest = home
            .devices
            .with(|ds| ds.iter().find(|x| x.id == d).and_then(|x| x.metrics.iter().find(|y| y.metric == m)).cloned());
        if let (Feedback::Pending { wanted, before, .. }, Some(latest)) = (state.get_untracked(), latest)
            && before.is_none_or(|b| latest.ts > b)
            && same(&wanted, &latest.value)
        {
            state.set(Feedback::Confirmed);
        }
    });
    let send = move |value: Value| {
        let (device, metric) = (device.clone(), metric.clone());
        let before = home.devices.with_untracked(|ds| {
            ds.iter().find(|x| x.id == device).and_then(|x| x.metrics.iter().find(|y| y.metric == metric)).map(|y| y.ts)
        });
        attempts.update_value(|n| *n += 1);
        let attempt = attempts.get_value();
        state.set(Feedback::Pending { wanted: value.clone(), before, attempt });
        set_timeout(
            move || {
                if matches!(state.get_untracked(), Feedback::Pending { attempt: a, .. } if a == attempt) {
                    state.set(Feedback::NoAnswer);
                }
            },
            ANSWER_WITHIN,
        );
        spawn_local(async move {
            let sent = api::command(&device, &metric, value).await;
            // A report may have confirmed it already.
            if !matches!(state.get_untracked(), Feedback::Pending { attempt: a, .. } if a == attempt) {
                return;
            }
            match sent {
                Ok(s) if s.delivery == Delivery::Queued => state.set(Feedback::Queued),
                Ok(s) if s.delivery == Delivery::Unheard => state.set(Feedback::Unheard),
                Ok(_) => {}
                Err(e) => state.set(Feedback::Failed(e.to_string())),
            }
        });
    };
    (state, send)
}

/// What a control's last command became, in words.
fn said(state: RwSignal<Feedback>) -> impl IntoView {
    move || {
        state.get().words().map(|(class, words)| {
            view! { <span class=format!("feedback {class}") role="status" aria-live="polite">{words}</span> }
        })
    }
}

/// The controls of a device: its settings (values of a category) or what it is for.
#[component]
pub fn Controls(
    /// The device.
    device: Device,
    /// Its settings rather than what it is for.
    settings: bool,
) -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return ().into_any() };
    let Some(discovered) = device.discovered.clone() else { return ().into_any() };
    let values: Vec<_> =
        discovered.values.into_iter().filter(|v| v.settable && v.category.is_some() == settings).collect();
    if values.is_empty() {
        return ().into_any();
    }
    // Unavailable: it said it is offline. Controls stay, saying so.
    let offline = device.discovered.as_ref().and_then(|d| d.online) == Some(false);
    let now = |metric: &str| device.metrics.iter().find(|m| m.metric == metric).map(|m| m.value.clone());
    let controls = values
        .into_iter()
        .map(|v| {
            let metric = v.metric.clone();
            let label = present::label(&device, &metric);
            let (state, send) = feedback(home, device.id.clone(), metric.clone());
            let current = {
                let (id, metric) = (device.id.clone(), metric.clone());
                Memo::new(move |_| {
                    home.devices.with(|ds| {
                        ds.iter()
                            .find(|x| x.id == id)
                            .and_then(|x| x.metrics.iter().find(|m| m.metric == metric))
                            .map(|m| m.value.clone())
                    })
                })
            };
            if v.on_off {
                let (on, off) = (send.clone(), send);
                view! {
                    <span class="switch" data-metric=metric.clone()>
                        <span class="label" title=metric.clone()>{label}</span>
                        <button class=move || if matches!(current.get(), Some(Value::Bool(true))) { "on" } else { "secondary on" }
                            aria-pressed=move || matches!(current.get(), Some(Value::Bool(true))).to_string()
                            on:click=move |_| on(Value::Bool(true))>"On"</button>
                        <button class=move || if matches!(current.get(), Some(Value::Bool(false))) { "off" } else { "secondary off" }
                            aria-pressed=move || matches!(current.get(), Some(Value::Bool(false))).to_string()
                            on:click=move |_| off(Value::Bool(false))>"Off"</button>
                        {said(state)}
                    </span>
                }
                .into_any()
            } else if v.options.is_empty() {
                let typed = RwSignal::new(match now(&metric) {
                    Some(Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                });
                let unit = present::unit(&device, &metric).unwrap_or_default();
                let set = move |ev: SubmitEvent| {
                    ev.prevent_default();
                    match typed.get_untracked().trim().parse::<f64>() {
                        Ok(n) => send(Value::Number(n)),
                        Err(_) => state.set(Feedback::Failed("give a number".into())),
                    }
                };
                view! {
                    <form class="switch number" data-metric=metric.clone() on:submit=set>
                        <span class="label" title=metric.clone()>{label.clone()}</span>
                        <input type="number" step="any" aria-label=label prop:value=typed on:input=move |ev| typed.set(event_target_value(&ev)) />
                        <span class="muted">{unit}</span>
                        <button class="secondary" type="submit">"Set"</button>
                        {said(state)}
                    </form>
                }
                .into_any()
            } else {
                let picked = RwSignal::new(match now(&metric) {
                    Some(Value::Text(t)) if v.options.contains(&t) => t,
                    _ => v.options.first().cloned().unwrap_or_default(),
                });
                let set = move |ev: SubmitEvent| {
                    ev.prevent_default();
                    send(Value::Text(picked.get_untracked()));
                };
                view! {
                    <form class="switch choice" data-metric=metric.clone() on:submit=set>
                        <span class="label" title=metric.clone()>{label.clone()}</span>
                        <select aria-label=label prop:value=picked on:change=move |ev| picked.set(event_target_value(&ev))>
                            {v.options.iter().map(|o| view! { <option value=o.clone()>{o.clone()}</option> }).collect_view()}
                        </select>
                        <button class="secondary" type="submit">"Set"</button>
                        {said(state)}
                    </form>
                }
                .into_any()
            }
        })
        .collect_view();
    view! {
        <div class="row switches">
            {offline.then(|| view! { <p class="warning unavailable">"Unavailable: the device said it is offline."</p> })}
            {controls}
        </div>
    }
    .into_any()
}
