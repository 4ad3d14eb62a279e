//! Home: every device with its latest values, updating live; add a device.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;

use hearth_model::devices::{BelongsTo, Credentials, Device};

use crate::api;
use crate::app::Home;
use crate::components::credentials::CredentialsPanel;
use crate::time::{ago, now_ms};

#[component]
pub fn Dashboard() -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    view! {
        {home.can_add.then(|| view! { <AddDevice /> })}
        <Show when=move || home.devices.with(Vec::is_empty)>
            <p class="muted">"No devices yet. Add one above, then send it a reading."</p>
        </Show>
        <div class="grid" id="devices">
            // A card is drawn again when what it shows changes: a new value, or a refusal.
            <For each=move || home.devices.get() key=|d| (d.id.clone(), d.metrics.len(), d.metrics.iter().map(|m| m.ts).max(), d.rejected.as_ref().map(|r| r.count)) let:device>
                <DeviceCard device=device />
            </For>
        </div>
    }
    .into_any()
}

#[component]
fn DeviceCard(
    /// The device to show.
    device: Device,
) -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let href = format!("/devices/{}", device.id);
    let described = device.discovered.as_ref().map(|d| d.values.clone()).unwrap_or_default();
    // Settings and diagnostics (a device's categories) are shown apart, folded: a wall
    // switch may have a hundred settings besides its light.
    let apart = |metric: &str| described.iter().any(|v| v.metric == metric && v.category.is_some());
    let (more, metrics): (Vec<_>, Vec<_>) = device.metrics.clone().into_iter().partition(|m| apart(&m.metric));
    let settings = described.iter().filter(|v| v.category.is_some() && v.settable).count();
    let folded = more.len() + settings;
    let class_of = move |metric: &str| described.iter().find(|v| v.metric == metric).and_then(|v| v.class.clone());
    let class_more = class_of.clone();
    let names = label_of(&device);
    let row = move |m: hearth_model::devices::Metric, class: Option<String>| {
        let ts = m.ts;
        view! {
            <li data-metric=m.metric.clone()>
                <span title=m.metric.clone()>{icon(class.as_deref(), &m.metric)} {names(&m.metric)}</span>
                <span>
                    <span class="value">{m.value.show()}</span>
                    " " {m.unit.clone().unwrap_or_default()}
                    <br /><span class="muted">{move || ago(ts, home.tick.get().max(now_ms()))}</span>
                </span>
            </li>
        }
    };
    let settings_device = device.clone();
    let bridge = device.bridge.clone().map(|id| {
        let name = home.devices.with_untracked(|ds| ds.iter().find(|d| d.id == id).map(|d| d.name.clone()));
        (format!("/devices/{id}"), name.unwrap_or(id))
    });
    let online = device.discovered.as_ref().and_then(|d| d.online);
    // The name it gave itself, where its owner named it otherwise.
    let announced = device.discovered.as_ref().and_then(|d| d.name.clone()).filter(|n| *n != device.name);
    // A device that is its own connection publishes in its namespaces; a bridge, for others.
    let connection = (!device.namespaces.is_empty()).then(|| {
        let what = if device.discovered.is_some() { "publishes in " } else { "bridge for " };
        format!("{what}{}", shortened(&device.namespaces))
    });
    let switches = device.clone();
    let discovered = device
        .discovered
        .as_ref()
        .map(|d| [d.manufacturer.clone(), d.model.clone()].into_iter().flatten().collect::<Vec<_>>().join(" "));
    view! {
        <article class="card device" data-device=device.id.clone()>
            <h2><A href=href>{device.name.clone()}</A></h2>
            {announced.map(|n| view! { <p class="muted announced">"calls itself " {n}</p> })}
            <p class="muted class">{if device.belongs_to == BelongsTo::Tenant { "tenant's device".to_owned() } else { device.class.to_string() }}</p>
            {bridge.map(|(href, name)| view! { <p class="muted via">"via " <A href=href>{name}</A></p> })}
            {discovered.filter(|d| !d.is_empty()).map(|d| view! { <p class="muted model">{d}</p> })}
            {online.map(|online| view! {
                <p class=if online { "availability online" } else { "availability offline warning" }>{if online { "online" } else { "offline" }}</p>
            })}
            {connection.map(|c| view! { <p class="muted namespaces">{c}</p> })}
            {device.plaintext.then(|| view! {
                <p class="warning in-clear" title="Allowed plain MQTT: its secret and readings cross the network unencrypted">"sends in clear"</p>
            })}
            <ul class="metrics">
                {metrics.into_iter().map(|m| { let class = class_of(&m.metric); row(m, class) }).collect_view()}
            </ul>
            {device.metrics.is_empty().then(|| view! { <p class="muted">"No readings yet."</p> })}
            <Switches device=switches settings=false />
            {(folded > 0).then(|| view! {
                <details class="settings">
                    <summary class="muted">"Settings and diagnostics (" {folded} ")"</summary>
                    <ul class="metrics">
                        {more.into_iter().map(|m| { let class = class_more(&m.metric); row(m, class) }).collect_view()}
                    </ul>
                    <Switches device=settings_device settings=true />
                </details>
            })}
            {device.rejected.map(|r| match r.recent.len() > 1 {
                false => view! { <p class="error">"Refused " {r.count} ": " {r.last_reason}</p> }.into_any(),
                // Each different reason, newest first.
                true => view! {
                    <div class="error refusals">
                        <p>"Refused " {r.count} ":"</p>
                        <ul>
                            {r.recent.into_iter().map(|x| view! { <li>{x.reason} " (" {x.count} "×)"</li> }).collect_view()}
                        </ul>
                    </div>
                }.into_any(),
            })}
        </article>
    }
    .into_any()
}

/// What each of a device's values is called: the name its device gives it, or its metric.
fn label_of(device: &Device) -> impl Fn(&str) -> String + Clone + 'static {
    let named: Vec<(String, String)> = device
        .discovered
        .iter()
        .flat_map(|d| d.values.iter())
        .filter_map(|v| Some((v.metric.clone(), v.name.clone()?)))
        .collect();
    move |metric: &str| named.iter().find(|(m, _)| m == metric).map_or_else(|| metric.to_owned(), |(_, n)| n.clone())
}

/// Namespaces as a line: the first few, and how many more.
fn shortened(namespaces: &[String]) -> String {
    match namespaces.len() {
        0..=3 => namespaces.join(", "),
        n => format!("{} and {} more", namespaces[..2].join(", "), n - 2),
    }
}

/// A glyph for a value, by its Home Assistant device class, or else by its name. Plain
/// symbols that common fonts have (a hub's browser may have no emoji font).
fn icon(class: Option<&str>, metric: &str) -> &'static str {
    let by = class.unwrap_or(metric).to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| by.contains(w));
    if has(&["temperature"]) {
        "♨"
    } else if has(&["humidity", "moisture"]) {
        "☂"
    } else if has(&["battery"]) {
        "▮"
    } else if has(&["power", "energy", "current", "voltage"]) {
        "⚡"
    } else if has(&["illuminance", "lux"]) {
        "☀"
    } else if has(&["door", "window", "opening", "garage"]) {
        "⌂"
    } else if has(&["motion", "occupancy", "presence"]) {
        "☉"
    } else if has(&["pressure"]) {
        "◔"
    } else if has(&["light", "brightness"]) {
        "☼"
    } else if has(&["online"]) {
        "◉"
    } else if has(&["state", "switch", "outlet", "relay", "power"]) {
        "◐"
    } else {
        "•"
    }
}

/// Controls for what a device takes as commands: On/Off for its switches, lights and
/// covers, a number (a brightness, a target temperature), or a choice from a list.
#[component]
fn Switches(
    /// The device.
    device: Device,
    /// Its settings (values of a category) rather than what it is for.
    settings: bool,
) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let Some(mut discovered) = device.discovered.clone() else { return ().into_any() };
    discovered.values.retain(|v| v.category.is_some() == settings);
    let settable: Vec<(String, Option<hearth_model::Value>)> = discovered
        .values
        .iter()
        .filter(|v| v.settable && v.on_off)
        .map(|v| (v.metric.clone(), device.metrics.iter().find(|m| m.metric == v.metric).map(|m| m.value.clone())))
        .collect();
    // Numbers it takes (a brightness, a thermostat's target), with the value it reports.
    let numbers: Vec<(String, String)> = discovered
        .values
        .iter()
        .filter(|v| v.settable && !v.on_off && v.options.is_empty())
        .filter_map(|v| {
            let now = device.metrics.iter().find(|m| m.metric == v.metric).map(|m| m.value.clone());
            match now {
                Some(hearth_model::Value::Number(n)) => Some((v.metric.clone(), n.to_string())),
                None => Some((v.metric.clone(), String::new())),
                Some(_) => None,
            }
        })
        .collect();
    // Values it takes from a list (a cover's OPEN/CLOSE/STOP, a thermostat's modes).
    let choices: Vec<(String, Vec<String>)> = discovered
        .values
        .iter()
        .filter(|v| v.settable && !v.on_off && !v.options.is_empty())
        .map(|v| (v.metric.clone(), v.options.clone()))
        .collect();
    if settable.is_empty() && numbers.is_empty() && choices.is_empty() {
        return ().into_any();
    }
    let id_choices = device.id.clone();
    let id_numbers = device.id.clone();
    let id = device.id.clone();
    let names = label_of(&device);
    let (names_numbers, names_choices) = (names.clone(), names.clone());
    view! {
        <div class="row switches">
            {settable.into_iter().map(|(metric, now)| {
                let (id, metric_on, metric_off) = (id.clone(), metric.clone(), metric.clone());
                let send = move |metric: String, on: bool| {
                    let id = id.clone();
                    spawn_local(async move {
                        match api::command(&id, &metric, hearth_model::Value::Bool(on)).await {
                            Ok(_) => error.set(None),
                            Err(e) => error.set(Some(e.to_string())),
                        }
                    });
                };
                let send_off = send.clone();
                let is_on = matches!(now, Some(hearth_model::Value::Bool(true)));
                let is_off = matches!(now, Some(hearth_model::Value::Bool(false)));
                view! {
                    <span class="switch" data-metric=metric.clone()>
                        <span class="muted" title=metric.clone()>{names(&metric)}</span>
                        <button class=if is_on { "on" } else { "secondary on" } on:click=move |_| send(metric_on.clone(), true)>"On"</button>
                        <button class=if is_off { "off" } else { "secondary off" } on:click=move |_| send_off(metric_off.clone(), false)>"Off"</button>
                    </span>
                }
            }).collect_view()}
            {numbers.into_iter().map(|(metric, now)| {
                let typed = RwSignal::new(now);
                let (id, name) = (id_numbers.clone(), metric.clone());
                let set = move |ev: SubmitEvent| {
                    ev.prevent_default();
                    let (id, name) = (id.clone(), name.clone());
                    let Ok(value) = typed.get_untracked().trim().parse::<f64>() else {
                        error.set(Some(format!("{name}: give a number")));
                        return;
                    };
                    spawn_local(async move {
                        match api::command(&id, &name, hearth_model::Value::Number(value)).await {
                            Ok(_) => error.set(None),
                            Err(e) => error.set(Some(e.to_string())),
                        }
                    });
                };
                view! {
                    <form class="switch number" data-metric=metric.clone() on:submit=set>
                        <span class="muted" title=metric.clone()>{names_numbers(&metric)}</span>
                        <input type="number" step="any" prop:value=typed on:input=move |ev| typed.set(event_target_value(&ev)) />
                        <button class="secondary" type="submit">"Set"</button>
                    </form>
                }
            }).collect_view()}
            {choices.into_iter().map(|(metric, options)| {
                let (id, name) = (id_choices.clone(), metric.clone());
                let picked = RwSignal::new(options.first().cloned().unwrap_or_default());
                let set = move |ev: SubmitEvent| {
                    ev.prevent_default();
                    let (id, name, value) = (id.clone(), name.clone(), picked.get_untracked());
                    spawn_local(async move {
                        match api::command(&id, &name, hearth_model::Value::Text(value)).await {
                            Ok(_) => error.set(None),
                            Err(e) => error.set(Some(e.to_string())),
                        }
                    });
                };
                view! {
                    <form class="switch choice" data-metric=metric.clone() on:submit=set>
                        <span class="muted" title=metric.clone()>{names_choices(&metric)}</span>
                        <select on:change=move |ev| picked.set(event_target_value(&ev))>
                            {options.into_iter().map(|o| view! { <option value=o.clone()>{o.clone()}</option> }).collect_view()}
                        </select>
                        <button class="secondary" type="submit">"Set"</button>
                    </form>
                }
            }).collect_view()}
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </div>
    }
    .into_any()
}

#[component]
fn AddDevice() -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let issued = RwSignal::new(None::<Credentials>);
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
        <section class="card">
            <form class="row" on:submit=submit>
                <input id="device-name" placeholder="New device, e.g. Kitchen sensor" required maxlength="64"
                    prop:value=name on:input=move |ev| name.set(event_target_value(&ev)) />
                <button id="device-add" type="submit">"Add device"</button>
            </form>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </section>
        {move || issued.get().map(|c| view! { <CredentialsPanel credentials=c on_close=move || issued.set(None) /> })}
    }
    .into_any()
}
