//! Home: one card per device, by room, favourites first, with search; hidden devices
//! folded; bridges on a page of their own. Values read as people say them and update live.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;

use hearth_model::devices::{Credentials, Device, DeviceKind};
use hearth_model::present;

use crate::api;
use crate::app::Home;
use crate::components::controls::Controls;
use crate::components::credentials::CredentialsPanel;
use crate::components::icon::{self, Icon};
use crate::time::{ago, now_ms};

/// What a card is drawn from: it is drawn again only when one of these changes (a value
/// updates in place, so a control's feedback stays).
fn card_key(d: &Device) -> (String, String, Option<String>, bool, bool, usize, usize) {
    let described = d.discovered.as_ref().map_or(0, |x| x.values.len());
    (d.id.clone(), d.name.clone(), d.room.clone(), d.favourite, d.hidden, described, d.labels.len())
}

/// Whether a device matches what was typed in the search box: its name, room, model or
/// the names of its values.
fn matches(d: &Device, query: &str) -> bool {
    let query = query.trim().to_lowercase();
    if query.is_empty() {
        return true;
    }
    let model = d.discovered.iter().flat_map(|x| [&x.manufacturer, &x.model]).flatten().cloned().collect::<Vec<_>>();
    let model = model.join(" ");
    let values = d.metrics.iter().map(|m| present::label(d, &m.metric)).collect::<Vec<_>>().join(" ");
    [d.name.as_str(), d.room.as_deref().unwrap_or_default(), &model, &values]
        .iter()
        .any(|text| text.to_lowercase().contains(&query))
}

#[component]
pub fn Dashboard() -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let query = RwSignal::new(String::new());
    let shown = move |hidden: bool| {
        home.devices.with(|ds| {
            ds.iter().filter(|d| d.hidden == hidden && matches(d, &query.get())).cloned().collect::<Vec<_>>()
        })
    };
    let favourites = move || {
        let mut list: Vec<Device> =
            shown(false).into_iter().filter(|d| d.favourite && d.kind == DeviceKind::Device).collect();
        present::sort_by_text(&mut list, |d| d.name.to_lowercase());
        list
    };
    let rooms = move || present::by_room(&shown(false).into_iter().filter(|d| !d.favourite).collect::<Vec<_>>());
    let hidden = move || present::by_room(&shown(true)).into_iter().flat_map(|(_, list)| list).collect::<Vec<_>>();
    let bridges = move || home.devices.with(|ds| ds.iter().filter(|d| d.kind == DeviceKind::Bridge).count());
    view! {
        <div class="row toolbar">
            <input id="search" type="search" placeholder="Search devices, rooms, values" aria-label="Search devices"
                prop:value=query on:input=move |ev| query.set(event_target_value(&ev)) />
            {move || (bridges() > 0).then(|| view! { <A href="/bridges" attr:id="bridges-link">"Bridges (" {bridges()} ")"</A> })}
        </div>
        <Show when=move || home.loaded.get() && home.devices.with(Vec::is_empty)>
            <p class="muted">"No devices yet. Add one below, then send it a reading."</p>
        </Show>
        <Show when=move || !favourites().is_empty()>
            <section class="room favourites" data-room="favourites" aria-label="Favourites">
                <h2>"Favourites"</h2>
                <div class="grid">
                    <For each=favourites key=card_key let:device>
                        <DeviceCard device=device />
                    </For>
                </div>
            </section>
        </Show>
        <div id="devices">
            <For each=rooms key=|(room, list)| (room.clone(), list.iter().map(card_key).collect::<Vec<_>>()) let:room>
                <section class="room" data-room=room.0.clone() aria-label=room.0.clone()>
                    <h2>{room.0.clone()}</h2>
                    <div class="grid">
                        {room.1.into_iter().map(|device| view! { <DeviceCard device=device /> }).collect_view()}
                    </div>
                </section>
            </For>
        </div>
        <Show when=move || !hidden().is_empty()>
            <details class="hidden-devices">
                <summary class="muted">"Hidden (" {move || hidden().len()} ")"</summary>
                <div class="grid">
                    <For each=hidden key=card_key let:device>
                        <DeviceCard device=device />
                    </For>
                </div>
            </details>
        </Show>
        {home.can_add.then(|| view! { <AddDevice /> })}
    }
    .into_any()
}

/// The bridges and hubs that speak for other devices (a Zigbee2MQTT coordinator): what
/// they publish in and the devices behind them.
#[component]
pub fn BridgesPage() -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let bridges =
        move || home.devices.with(|ds| ds.iter().filter(|d| d.kind == DeviceKind::Bridge).cloned().collect::<Vec<_>>());
    view! {
        <h2>"Bridges"</h2>
        <p class="muted">"Coordinators and gateways that speak for the devices behind them."</p>
        <div class="grid" id="bridges">
            <For each=bridges key=card_key let:bridge>
                {
                    let id = bridge.id.clone();
                    let behind = home.devices.with_untracked(|ds| ds.iter().filter(|d| d.bridge.as_deref() == Some(id.as_str())).count());
                    let online = bridge.metrics.iter().find(|m| m.metric == "state").map(|m| m.value.show());
                    view! {
                        <article class="card bridge" data-device=bridge.id.clone()>
                            <h3><A href=format!("/devices/{}", bridge.id)>{bridge.name.clone()}</A></h3>
                            <p class="muted">{behind} " devices behind it"</p>
                            {online.map(|s| view! { <p class="muted">"State: " {s}</p> })}
                            {(!bridge.namespaces.is_empty()).then(|| view! { <p class="muted namespaces">"Publishes in " {bridge.namespaces.join(", ")}</p> })}
                        </article>
                    }
                }
            </For>
        </div>
    }
    .into_any()
}

/// One device at a glance: its values in words with their units, its controls, whether it
/// is unavailable or its battery low. Values follow the live stream in place.
#[component]
fn DeviceCard(
    /// The device as it was when the card was drawn.
    device: Device,
) -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let id = device.id.clone();
    let live = {
        let id = id.clone();
        Memo::new(move |_| home.devices.with(|ds| ds.iter().find(|d| d.id == id).cloned()))
    };
    let href = format!("/devices/{}", device.id);
    let bridge = device.bridge.clone().map(|id| {
        let name = home.devices.with_untracked(|ds| ds.iter().find(|d| d.id == id).map(|d| d.name.clone()));
        (format!("/devices/{id}"), name.unwrap_or(id))
    });
    let model = device
        .discovered
        .as_ref()
        .map(|d| [d.manufacturer.clone(), d.model.clone()].into_iter().flatten().collect::<Vec<_>>().join(" "))
        .filter(|m| !m.is_empty());
    // Settings and diagnostics are folded apart: a wall switch may have a hundred settings
    // besides its light. A value with an On/Off control shows its state there.
    let shown = move |d: &Device, metric: &str, settings: bool| {
        present::diagnostic(d, metric) == settings && !present::switched(d, metric)
    };
    let settings = {
        let described =
            device.discovered.as_ref().map_or(0, |d| d.values.iter().filter(|v| v.category.is_some()).count());
        let plumbing = device.metrics.iter().filter(|m| present::diagnostic(&device, &m.metric)).count();
        described.max(plumbing)
    };
    let rows = move |settings: bool| {
        move || {
            let Some(d) = live.get() else { return Vec::new().into_iter().collect_view() };
            d.metrics
                .iter()
                .filter(|m| shown(&d, &m.metric, settings))
                .map(|m| {
                    let whole = crate::time::shown(&d, &m.metric, &m.value);
                    let (short, cut) = present::short(&whole);
                    let ts = m.ts;
                    let on = match m.value {
                        hearth_model::Value::Bool(b) => Some(b),
                        _ => None,
                    };
                    let glyph = icon::for_class(present::class(&d, &m.metric).as_deref(), on);
                    // Past its usual interval, a value says how old it is.
                    let reading = m.clone();
                    let old = move || {
                        let now = home.tick.get().max(now_ms());
                        present::stale(&reading, now).then(|| view! { <span class="old">{ago(ts, now)}</span> })
                    };
                    let title = move || match cut {
                        true => format!("{whole}, {}", ago(ts, home.tick.get().max(now_ms()))),
                        false => ago(ts, home.tick.get().max(now_ms())),
                    };
                    view! {
                        <li data-metric=m.metric.clone() title=title>
                            <span class="label"><Icon icon=glyph />" "{present::label(&d, &m.metric)}</span>
                            <span class="value" tabindex=cut.then_some("0")>{short}{old}</span>
                        </li>
                    }
                })
                .collect_view()
        }
    };
    let status = move || {
        let d = live.get()?;
        let offline = d.discovered.as_ref().and_then(|x| x.online) == Some(false);
        let low = present::battery(&d).filter(|b| *b < present::LOW_BATTERY);
        Some(view! {
            {offline.then(|| view! { <p class="availability offline warning">"Unavailable"</p> })}
            {low.map(|b| view! { <p class="battery low warning">{format!("Battery low ({b:.0} %)")}</p> })}
            {d.metrics.is_empty().then(|| view! { <p class="muted">"No readings yet."</p> })}
            {d.rejected.map(|r| view! { <p class="error">"Refused " {r.count} ": " {r.last_reason}</p> })}
        })
    };
    let settings_device = device.clone();
    let (name, favourite) = (device.name.clone(), device.favourite);
    view! {
        <article class="card device" data-device=device.id.clone() class:favourite=favourite>
            <h3><A href=href>{name}</A></h3>
            // What it is, how it is reached, when it last spoke: one line.
            <p class="muted meta">
                {model.map(|m| view! { <span class="model">{m}</span> })}
                {bridge.map(|(href, name)| view! { <span class="via">"via " <A href=href>{name}</A></span> })}
                {move || live.get().and_then(|d| d.metrics.iter().map(|m| m.ts).max()).map(|ts| view! {
                    <span class="ago">{move || ago(ts, home.tick.get().max(now_ms()))}</span>
                })}
            </p>
            {status}
            <ul class="metrics">{rows(false)}</ul>
            <Controls device=device.clone() settings=false />
            {(settings > 0).then(|| view! {
                <details class="settings">
                    <summary class="muted">"Settings and diagnostics (" {settings} ")"</summary>
                    <ul class="metrics">{rows(true)}</ul>
                    <Controls device=settings_device.clone() settings=true />
                </details>
            })}
        </article>
    }
    .into_any()
}

#[component]
fn AddDevice() -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let issued = RwSignal::new(None::<Credentials>);
    // A memo, so a reading arriving does not fold a form being typed in.
    let empty = Memo::new(move |_| home.loaded.get() && home.devices.with(Vec::is_empty));
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        spawn_local(async move {
            match api::add_device(name.get_untracked().trim()).await {
                Ok(credentials) => {
                    issued.set(Some(credentials));
                    name.set(String::new());
                    error.set(None);
                    home.reload();
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    view! {
        // Out of the way below the home, folded, unless there is nothing else yet.
        <details class="card add-device" prop:open=empty>
            <summary>"Add a device"</summary>
            <form class="row" on:submit=submit>
                <input id="device-name" placeholder="New device, e.g. Kitchen sensor" required maxlength="64"
                    aria-label="New device's name"
                    prop:value=name on:input=move |ev| name.set(event_target_value(&ev)) />
                <button id="device-add" type="submit">"Add device"</button>
            </form>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </details>
        {move || issued.get().map(|c| view! { <CredentialsPanel credentials=c on_close=move || issued.set(None) /> })}
    }
    .into_any()
}
