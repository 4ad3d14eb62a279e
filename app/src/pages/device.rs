//! One device: its metrics, a history chart per metric over a chosen range, new
//! credentials, removal.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};

use hearth_model::DeviceClass;
use hearth_model::devices::{BelongsTo, Credentials, Device};

use crate::api;
use crate::app::Home;
use crate::components::chart::Chart;
use crate::components::credentials::CredentialsPanel;
use crate::time::{ago, local, now_ms};

/// Ranges offered for the chart: label and length in ms.
const RANGES: [(&str, i64); 4] =
    [("1 h", 3_600_000), ("24 h", 86_400_000), ("7 days", 604_800_000), ("30 days", 2_592_000_000)];
/// Buckets per chart: enough detail for a phone or a laptop screen.
const POINTS: usize = 120;

#[component]
pub fn DevicePage() -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let device = move || home.devices.with(|ds| ds.iter().find(|d| d.id == id()).cloned());
    let chosen = RwSignal::new(None::<String>);
    let range = RwSignal::new(RANGES[1].1);
    let issued = RwSignal::new(None::<Credentials>);
    let error = RwSignal::new(None::<String>);
    let metric = move || chosen.get().or_else(|| device().and_then(|d| d.metrics.first().map(|m| m.metric.clone())));
    // Refetch when the metric, the range or the metric's latest reading changes.
    let latest_ts = move || {
        let m = metric();
        device().and_then(|d| d.metrics.iter().find(|x| Some(&x.metric) == m.as_ref()).map(|x| x.ts))
    };
    let history = LocalResource::new(move || {
        let (id, metric, range, _) = (id(), metric(), range.get(), latest_ts());
        async move {
            let metric = metric?;
            let to = now_ms() + 1;
            Some(api::history(&id, &metric, to - range, to, POINTS).await)
        }
    });
    let navigate = use_navigate();
    let remove = move |_| {
        let confirmed = web_sys::window()
            .and_then(|w| {
                w.confirm_with_message("Remove this device? Its credentials stop working; its history is kept.").ok()
            })
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::remove(&id()).await {
                Ok(()) => {
                    home.reload();
                    navigate("/", Default::default());
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    let regenerate = move |_| {
        spawn_local(async move {
            match api::regenerate(&id()).await {
                Ok(c) => issued.set(Some(c)),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };

    view! {
        {move || match device() {
            None if home.loaded.get() => view! {
                <h2>"No such device"</h2>
                <p id="no-device">"There is no device " <code>{id()}</code> " here: it was removed, or it is not yours to see. "
                    <A href="/">"All devices"</A></p>
            }.into_any(),
            None => view! { <p class="muted">"Loading device…"</p> }.into_any(),
            Some(d) => view! {
                <h2>{d.name.clone()}</h2>
                <p class="muted">"id " <code>{d.id.clone()}</code> " · added " {local(d.created)}</p>
                {(!d.namespaces.is_empty()).then(|| {
                    let id = d.id.clone();
                    let behind = move || home.devices.with(|ds| ds.iter().filter(|x| x.bridge.as_deref() == Some(id.as_str())).map(|x| (x.id.clone(), x.name.clone())).collect::<Vec<_>>());
                    let own = d.discovered.is_some();
                    view! {
                        <section class="card behind">
                            <h3>{if own { "Its connection" } else { "Devices behind this bridge" }}</h3>
                            <p class="muted">"It publishes in " {d.namespaces.join(", ")}</p>
                            <ul>
                                {move || behind().into_iter().map(|(id, name)| view! {
                                    <li><A href=format!("/devices/{id}")>{name}</A></li>
                                }).collect_view()}
                            </ul>
                        </section>
                    }
                })}
                <ClassLine device=d.clone() on_error=error />
                <CoapLine device=d.clone() on_error=error />
                <PlaintextLine device=d.clone() on_error=error />
                <div class="row">
                    {d.metrics.iter().map(|m| {
                        let name = m.metric.clone();
                        let label = format!("{}: {} {}", m.metric, m.value.show(), m.unit.clone().unwrap_or_default());
                        let pick = name.clone();
                        let ts = m.ts;
                        view! {
                            <button
                                class=move || if metric().as_deref() == Some(name.as_str()) { "" } else { "secondary" }
                                on:click=move |_| chosen.set(Some(pick.clone()))
                                title=move || ago(ts, home.tick.get().max(now_ms()))
                            >{label}</button>
                        }
                    }).collect_view()}
                </div>
            }.into_any(),
        }}
        <section class="card">
            <div class="row">
                {RANGES.iter().map(|&(label, ms)| view! {
                    <button class=move || if range.get() == ms { "" } else { "secondary" } on:click=move |_| range.set(ms)>{label}</button>
                }).collect_view()}
            </div>
            <Transition fallback=|| view! { <p class="muted">"Loading history…"</p> }>
                {move || Suspend::new(async move {
                    let unit = {
                        let m = metric();
                        device().and_then(|d| d.metrics.into_iter().find(|x| Some(&x.metric) == m.as_ref()).and_then(|x| x.unit))
                    };
                    match history.await {
                        None => view! { <p class="muted">"No readings yet."</p> }.into_any(),
                        Some(Ok(h)) => view! { <Chart history=h unit=unit /> }.into_any(),
                        Some(Err(e)) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Transition>
        </section>
        <section class="row" style:display=move || if device().is_some_and(|d| d.manageable) { "" } else { "none" }>
            <button class="secondary" on:click=regenerate>"New credentials"</button>
            <button class="danger" on:click=remove>"Remove device"</button>
        </section>
        {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        {move || issued.get().map(|c| view! { <CredentialsPanel credentials=c on_close=move || issued.set(None) /> })}
    }
    .into_any()
}

/// Whose readings this device makes, in words; the owner can change the class of the home's
/// devices (from now on only).
#[component]
fn ClassLine(
    /// The device.
    device: Device,
    /// Where errors go.
    on_error: RwSignal<Option<String>>,
) -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let words = match (device.belongs_to, device.class) {
        (BelongsTo::Tenant, _) => "A tenant's own device: its readings are the tenant's.",
        (_, DeviceClass::Building) => "Building device: its readings are always the owner's.",
        _ => "Household device: during a tenancy its readings are the tenant's, otherwise the owner's.",
    };
    let can_change = device.manageable && device.belongs_to == BelongsTo::Owner;
    let id = device.id.clone();
    let class = device.class;
    let waiting = RwSignal::new(false);
    view! {
        <p class="muted" id="device-class" data-class=device.class.as_str()>{words}</p>
        {move || waiting.get().then(|| view! {
            <p class="ok" id="class-waiting">"A tenant lives here: the change waits for their agreement (they were asked)."</p>
        })}
        {can_change.then(|| view! {
            <label>"Class (applies to readings from now on) "
                <select id="class-select" on:change=move |ev| {
                    let Ok(class) = event_target_value(&ev).parse::<DeviceClass>() else { return };
                    let id = id.clone();
                    spawn_local(async move {
                        match api::set_class(&id, class).await {
                            Ok(changed) if changed.proposal.is_some() => waiting.set(true),
                            Ok(_) => home.reload(),
                            Err(e) => on_error.set(Some(e.to_string())),
                        }
                    });
                }>
                    {DeviceClass::ALL.iter().map(|c| view! {
                        <option value=c.as_str() selected=*c == class>{c.as_str()}</option>
                    }).collect_view()}
                </select>
            </label>
        })}
    }
    .into_any()
}

/// Whether the device may use plain MQTT, and when it last did. Its manager changes it.
#[component]
fn PlaintextLine(
    /// The device.
    device: Device,
    /// Where errors go.
    on_error: RwSignal<Option<String>>,
) -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let id = StoredValue::new(device.id.clone());
    let marked = device.plaintext;
    let set = move |plaintext: bool| {
        spawn_local(async move {
            match api::set_plaintext(&id.get_value(), plaintext).await {
                Ok(_) => {
                    on_error.set(None);
                    home.reload();
                }
                Err(e) => on_error.set(Some(e.to_string())),
            }
        });
    };
    let shown = match (marked, device.clear_seen) {
        (true, Some(at)) => format!("Sends in clear: plain MQTT allowed (last in clear {}).", local(at)),
        (true, None) => "Plain MQTT allowed (marked as unable to do TLS).".to_owned(),
        (false, _) => "MQTT over TLS only.".to_owned(),
    };
    view! {
        <p class=if marked { "warning" } else { "muted" } id="device-plaintext">{shown}</p>
        {device.manageable.then(|| view! {
            <button class="secondary" id="toggle-plaintext" on:click=move |_| set(!marked)>
                {if marked { "Require TLS" } else { "Allow plain MQTT (device cannot do TLS)" }}
            </button>
        })}
    }
    .into_any()
}

/// Where rules send this device CoAP commands. The owner sets it for the home's devices;
/// rules name the device, never an address.
#[component]
fn CoapLine(
    /// The device.
    device: Device,
    /// Where errors go.
    on_error: RwSignal<Option<String>>,
) -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let can_change = device.manageable && device.belongs_to == BelongsTo::Owner;
    let current = device.coap_address.clone();
    let typed = RwSignal::new(current.clone().unwrap_or_default());
    let id = StoredValue::new(device.id.clone());
    let save = move |address: Option<String>| {
        spawn_local(async move {
            match api::set_coap_address(&id.get_value(), address).await {
                Ok(_) => {
                    on_error.set(None);
                    home.reload();
                }
                Err(e) => on_error.set(Some(e.to_string())),
            }
        });
    };
    let shown = match (&current, device.plaintext) {
        (Some(a), false) => {
            format!("Rules send CoAP commands to {a}, over DTLS with the device's key (port 5684 if none is given).")
        }
        (Some(a), true) => format!("Rules send CoAP commands to {a}, in clear (port 5683 if none is given)."),
        (None, _) => "No CoAP address: rules command it over MQTT only.".to_owned(),
    };
    view! {
        <p class="muted" id="device-coap">{shown}</p>
        {can_change.then(|| view! {
            <form class="row" on:submit=move |ev| {
                ev.prevent_default();
                let text = typed.get_untracked();
                save((!text.trim().is_empty()).then(|| text.trim().to_owned()));
            }>
                <label>"CoAP address (IP, optional port) "
                    <input id="coap-address" placeholder="192.0.2.7:5683" prop:value=move || typed.get()
                        on:input=move |ev| typed.set(event_target_value(&ev)) />
                </label>
                <button type="submit" class="secondary">"Save address"</button>
            </form>
        })}
    }
    .into_any()
}
