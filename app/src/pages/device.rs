//! One device: what it is (maker, model, firmware, via which bridge, online, battery), its
//! controls and values, a history chart per value over a chosen range, its name and room,
//! the rules that use it; connection plumbing (credentials, plain MQTT, CoAP address) only
//! where it applies, in a section of its own.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};

use hearth_model::devices::{BelongsTo, Credentials, Device, DeviceChanges, DeviceKind};
use hearth_model::present;
use hearth_model::{DeviceClass, Value};

use crate::api;
use crate::app::Home;
use crate::components::chart::Chart;
use crate::components::confirm::use_confirm;
use crate::components::controls::Controls;
use crate::components::credentials::CredentialsPanel;
use crate::pages::PageLink;
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
    let id_now = move || params.read_untracked().get("id").unwrap_or_default();
    let device = move || home.devices.with(|ds| ds.iter().find(|d| d.id == id()).cloned());
    let chosen = RwSignal::new(None::<String>);
    let range = RwSignal::new(RANGES[1].1);
    let issued = RwSignal::new(None::<Credentials>);
    let error = RwSignal::new(None::<String>);
    // At first the first of what it is for (not its link quality).
    let metric = move || {
        chosen.get().or_else(|| {
            let d = device()?;
            let first = d.metrics.iter().find(|m| !present::diagnostic(&d, &m.metric)).or(d.metrics.first());
            first.map(|m| m.metric.clone())
        })
    };
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
    let confirm = use_confirm();
    let name = move || device().map(|d| d.name).unwrap_or_default();
    // The device asked about is the one on the page when asking, whatever the page shows by
    // the time the answer comes.
    let remove = move |_| {
        let navigate = navigate.clone();
        let asked = id();
        confirm.ask(
            format!("Remove {}?", name()),
            "Its credentials stop working at once and it leaves the home page; its history is kept.",
            "Remove device",
            move || {
                let (navigate, asked) = (navigate.clone(), asked.clone());
                spawn_local(async move {
                    match api::remove(&asked).await {
                        Ok(()) => {
                            home.reload();
                            navigate("/", Default::default());
                        }
                        Err(e) => error.set(Some(e.to_string())),
                    }
                })
            },
        );
    };
    let regenerate = move |_| {
        let asked = id();
        confirm.ask(
            format!("New credentials for {}?", name()),
            "Its current secret stops working at once: the device is cut off until the new one is entered on it.",
            "Issue new credentials",
            move || {
                let asked = asked.clone();
                spawn_local(async move {
                    match api::regenerate(&asked).await {
                        Ok(c) => issued.set(Some(c)),
                        Err(e) => error.set(Some(e.to_string())),
                    }
                })
            },
        );
    };

    // The page is drawn again when what it shows of the device changes, not on each reading
    // (a control's feedback and a form being typed in stay); values follow readings in place.
    let shape = Memo::new(move |_| {
        device().map(|mut d| {
            d.metrics.iter_mut().for_each(|m| (m.ts, m.value) = (0, hearth_model::Value::Bool(false)));
            d.rejected = None;
            d
        })
    });
    let saved = RwSignal::new(false);
    view! {
        {move || match shape.get() {
            None if home.loaded.get() => view! {
                <h2>"No such device"</h2>
                <p id="no-device">"There is no device " <code>{id()}</code> " here: it was removed, or it is not yours to see. "
                    <A href="/">"All devices"</A></p>
            }.into_any(),
            None => view! { <p class="muted">"Loading device…"</p> }.into_any(),
            Some(_) => {
                let Some(d) = home.devices.with_untracked(|ds| ds.iter().find(|d| d.id == id_now()).cloned()) else {
                    return ().into_any();
                };
                // Credentials, plain MQTT and a CoAP address are a connection's: a device
                // behind a bridge has none of them.
                let own_connection = d.bridge.is_none();
                view! {
                <h2 id="device-title">{d.name.clone()}</h2>
                <About device=d.clone() />
                <Controls device=d.clone() settings=false />
                <div class="row values">
                    {d.metrics.iter().map(|m| {
                        let name = m.metric.clone();
                        let label = {
                            let metric = m.metric.clone();
                            move || {
                                let d = device()?;
                                let now = d.metrics.iter().find(|x| x.metric == metric)?;
                                Some(format!("{}: {}", present::label(&d, &metric), crate::time::shown(&d, &metric, &now.value)))
                            }
                        };
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
                {d.discovered.as_ref().is_some_and(|x| x.values.iter().any(|v| v.category.is_some() && v.settable)).then(|| view! {
                    <details class="card settings">
                        <summary>"Settings"</summary>
                        <Controls device=d.clone() settings=true />
                    </details>
                })}
                <Arrange device=d.clone() on_error=error saved=saved />
                <details class="card ownership" id="ownership">
                    <summary>"Whose readings"</summary>
                    <ClassLine device=d.clone() on_error=error />
                </details>
                <Logbook device=d.clone() />
                <UsedBy device=d.id.clone() />
                {(d.kind == DeviceKind::Bridge || !d.namespaces.is_empty()).then(|| {
                    let id = d.id.clone();
                    let behind = move || home.devices.with(|ds| ds.iter().filter(|x| x.bridge.as_deref() == Some(id.as_str())).map(|x| (x.id.clone(), x.name.clone())).collect::<Vec<_>>());
                    let own = d.discovered.is_some();
                    view! {
                        <section class="card behind">
                            <h3>{if own { "Its connection" } else { "Devices behind this bridge" }}</h3>
                            {(!d.namespaces.is_empty()).then(|| view! { <p class="muted">"It publishes in " {d.namespaces.join(", ")}</p> })}
                            <ul>
                                {move || behind().into_iter().map(|(id, name)| view! {
                                    <li><A href=format!("/devices/{id}")>{name}</A></li>
                                }).collect_view()}
                            </ul>
                        </section>
                    }
                })}
                {own_connection.then(|| view! {
                    <details class="card connection" id="connection">
                        <summary>"Connection and credentials"</summary>
                        <p class="muted">"id " <code>{d.id.clone()}</code> " · added " {local(d.created)}</p>
                        <CoapLine device=d.clone() on_error=error />
                        <PlaintextLine device=d.clone() on_error=error />
                        {d.manageable.then(|| view! { <button class="secondary" id="new-credentials" on:click=regenerate>"New credentials"</button> })}
                    </details>
                })}
                }.into_any()
            }
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
            <button class="danger" id="remove-device" on:click=remove>"Remove device"</button>
        </section>
        {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        {move || issued.get().map(|c| view! { <CredentialsPanel credentials=c on_close=move || issued.set(None) /> })}
    }
    .into_any()
}

/// What the device is: maker, model, firmware, via which bridge, room, whether it is
/// online, its battery, whose readings it makes.
#[component]
fn About(
    /// The device.
    device: Device,
) -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let d = device.discovered.clone();
    let line = |what: &'static str, text: Option<String>| {
        text.filter(|t| !t.is_empty()).map(|t| view! { <dt>{what}</dt><dd data-about=what>{t}</dd> })
    };
    let announced = d.as_ref().and_then(|x| x.name.clone()).filter(|n| *n != device.name);
    let via = device.bridge.clone().map(|id| {
        let name = home.devices.with_untracked(|ds| ds.iter().find(|x| x.id == id).map(|x| x.name.clone()));
        (format!("/devices/{id}"), name.unwrap_or(id))
    });
    let online = d
        .as_ref()
        .and_then(|x| x.online)
        .map(|o| if o { "Online" } else { "Unavailable (it said it is offline)" }.to_owned());
    let battery = present::battery(&device).map(|b| match b < present::LOW_BATTERY {
        true => format!("{b:.0} % (low)"),
        false => format!("{b:.0} %"),
    });
    view! {
        <dl class="about card" id="device-about">
            {line("Maker", d.as_ref().and_then(|x| x.manufacturer.clone()))}
            {line("Model", d.as_ref().and_then(|x| x.model.clone()))}
            {line("Firmware", d.as_ref().and_then(|x| x.firmware.clone()))}
            {line("Calls itself", announced)}
            {via.map(|(href, name)| view! { <dt>"Via"</dt><dd data-about="Via"><A href=href>{name}</A></dd> })}
            {line("Room", device.room.clone())}
            {line("State", online)}
            {line("Battery", battery)}
        </dl>
    }
    .into_any()
}

/// What people choose for one of a device's values.
struct ValueChoice {
    metric: String,
    /// What the device calls it (the placeholder of its name).
    announced: String,
    /// The name people give it (empty: the device's).
    typed: RwSignal<String>,
    /// Folded away from its card.
    hide: RwSignal<bool>,
    /// Shown live, never stored.
    unrecorded: RwSignal<bool>,
}

/// Its name, room, favourite and hidden, and what of it is recorded, as people choose them
/// (discovery never overwrites them).
#[component]
fn Arrange(
    /// The device.
    device: Device,
    /// Where errors go.
    on_error: RwSignal<Option<String>>,
    /// Whether the last change was saved (the page outlives this form).
    saved: RwSignal<bool>,
) -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    // Its manager's to choose (the owner the home's devices, a tenant their own).
    if !device.manageable {
        return ().into_any();
    }
    let name = RwSignal::new(device.name.clone());
    let room = RwSignal::new(device.room.clone().unwrap_or_default());
    let favourite = RwSignal::new(device.favourite);
    let hidden = RwSignal::new(device.hidden);
    let unrecorded = RwSignal::new(device.unrecorded);
    let rooms = home.devices.with_untracked(|ds| {
        let mut rooms: Vec<String> = ds.iter().filter_map(|d| d.room.clone()).collect();
        present::sort_by_text(&mut rooms, String::clone);
        rooms.dedup();
        rooms
    });
    // What people call each of its values, in place of what the device calls them (empty:
    // the device's name for it, shown as the placeholder). Values not recorded are listed
    // even when nothing shows them now (never stored, none heard since the hub started):
    // saving the form must not record them again.
    let mut metrics: Vec<String> = present::metrics(&device, false).into_iter().map(|(metric, ..)| metric).collect();
    metrics.extend(device.unrecorded_values.iter().filter(|m| !metrics.contains(m)).cloned().collect::<Vec<_>>());
    let values: Vec<ValueChoice> = metrics
        .into_iter()
        .map(|metric| {
            let mut announced = device.clone();
            announced.labels.remove(&metric);
            let given = device.labels.get(&metric).cloned().unwrap_or_default();
            let hidden = device.hidden_values.contains(&metric);
            let unrecorded = device.unrecorded_values.contains(&metric);
            ValueChoice {
                announced: present::label(&announced, &metric),
                metric,
                typed: RwSignal::new(given),
                hide: RwSignal::new(hidden),
                unrecorded: RwSignal::new(unrecorded),
            }
        })
        .collect();
    let original = StoredValue::new(device.labels.clone());
    let values = StoredValue::new(values);
    let id = StoredValue::new(device.id.clone());
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        // Only the names that changed (so a value the device no longer has is not sent).
        let labels = values.with_value(|values| {
            values
                .iter()
                .map(|v| (v.metric.clone(), v.typed.get_untracked().trim().to_owned()))
                .filter(|(metric, typed)| original.with_value(|o| o.get(metric).map_or("", String::as_str) != typed))
                .collect()
        });
        let chosen = |pick: fn(&ValueChoice) -> RwSignal<bool>| {
            values.with_value(|values| {
                values.iter().filter(|v| pick(v).get_untracked()).map(|v| v.metric.clone()).collect()
            })
        };
        let changes = DeviceChanges {
            name: Some(name.get_untracked()),
            room: Some(room.get_untracked()),
            favourite: Some(favourite.get_untracked()),
            hidden: Some(hidden.get_untracked()),
            labels,
            hidden_values: Some(chosen(|v| v.hide)),
            unrecorded: Some(unrecorded.get_untracked()),
            unrecorded_values: Some(chosen(|v| v.unrecorded)),
        };
        saved.set(false);
        spawn_local(async move {
            match api::change_device(&id.get_value(), &changes).await {
                Ok(_) => {
                    on_error.set(None);
                    saved.set(true);
                    home.reload();
                }
                Err(e) => on_error.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <form class="card arrange" id="arrange" on:submit=save>
            <h3>"Name and room"</h3>
            <label>"Name " <input id="arrange-name" maxlength="64" prop:value=name on:input=move |ev| name.set(event_target_value(&ev)) /></label>
            <label>"Room " <input id="arrange-room" list="rooms" maxlength="64" placeholder="Kitchen" prop:value=room
                on:input=move |ev| room.set(event_target_value(&ev)) /></label>
            <datalist id="rooms">{rooms.into_iter().map(|r| view! { <option value=r /> }).collect_view()}</datalist>
            <label><input type="checkbox" id="arrange-favourite" prop:checked=favourite
                on:change=move |ev| favourite.set(event_target_checked(&ev)) /> " Favourite (first on the home page)"</label>
            <label><input type="checkbox" id="arrange-hidden" prop:checked=hidden
                on:change=move |ev| hidden.set(event_target_checked(&ev)) /> " Hidden from the home page"</label>
            <label><input type="checkbox" id="arrange-unrecorded" prop:checked=unrecorded
                on:change=move |ev| unrecorded.set(event_target_checked(&ev)) />
                " Don't record (its values are shown live and used by rules, never stored)"</label>
            {values.with_value(|values| (!values.is_empty()).then(|| view! {
                <details class="labels">
                    <summary>"Its values: names, which its card shows, which are recorded"</summary>
                    {values.iter().map(|v| {
                        let (typed, hide, off) = (v.typed, v.hide, v.unrecorded);
                        view! {
                            <div class="row value-choice" data-metric=v.metric.clone()>
                                <label>{v.metric.clone()}
                                    <input maxlength="64" placeholder=v.announced.clone() prop:value=typed
                                        on:input=move |ev| typed.set(event_target_value(&ev)) />
                                </label>
                                <label class="inline"><input type="checkbox" class="hide-value" prop:checked=hide
                                    on:change=move |ev| hide.set(event_target_checked(&ev)) /> " Fold away"</label>
                                <label class="inline"><input type="checkbox" class="unrecorded-value" prop:checked=off
                                    on:change=move |ev| off.set(event_target_checked(&ev)) /> " Don't record"</label>
                            </div>
                        }
                    }).collect_view()}
                </details>
            }))}
            <button type="submit" id="arrange-save">"Save"</button>
            {move || saved.get().then(|| view! { <span class="ok" role="status">"Saved."</span> })}
        </form>
    }
    .into_any()
}

/// How far back the logbook looks.
const LOGBOOK_MS: i64 = 86_400_000;
/// Most lines in the logbook.
const LOGBOOK_LINES: usize = 30;

/// Its state changes of the last day, newest first: each on/off or text value it is for
/// (not its diagnostics) in words ("Contact: Open").
#[component]
fn Logbook(
    /// The device.
    device: Device,
) -> impl IntoView {
    let states: Vec<String> = device
        .metrics
        .iter()
        .filter(|m| matches!(m.value, Value::Bool(_) | Value::Text(_)) && !present::diagnostic(&device, &m.metric))
        .map(|m| m.metric.clone())
        .collect();
    if states.is_empty() {
        return ().into_any();
    }
    let Some(home) = use_context::<Home>() else { return ().into_any() };
    // Read again when one of these values changes.
    let latest = {
        let (id, states) = (device.id.clone(), states.clone());
        Memo::new(move |_| {
            home.devices.with(|ds| {
                let d = ds.iter().find(|d| d.id == id)?;
                d.metrics
                    .iter()
                    .filter(|m| states.contains(&m.metric))
                    .map(|m| (m.ts, m.value.clone()))
                    .max_by_key(|(ts, _)| *ts)
            })
        })
    };
    let shown = device.clone();
    let lines = LocalResource::new(move || {
        latest.track();
        let (id, states, device) = (shown.id.clone(), states.clone(), shown.clone());
        async move {
            let to = now_ms() + 1;
            let mut lines: Vec<(i64, String)> = Vec::new();
            for metric in states {
                let Ok(readings) = api::raw(&id, &metric, to - LOGBOOK_MS, to).await else { continue };
                let mut last: Option<Value> = None;
                for point in readings.readings.unwrap_or_default() {
                    if last.as_ref() != Some(&point.value) {
                        let words = crate::time::shown(&device, &metric, &point.value);
                        lines.push((point.ts, format!("{}: {words}", present::label(&device, &metric))));
                        last = Some(point.value);
                    }
                }
            }
            // Newest first: the key counts down as time goes on, padded so text order is number order.
            present::sort_by_text(&mut lines, |(ts, _)| format!("{:020}", i64::MAX - (*ts).max(0)));
            lines.truncate(LOGBOOK_LINES);
            lines
        }
    });
    view! {
        <section class="card logbook" id="logbook">
            <h3>"Logbook"</h3>
            <Transition fallback=|| view! { <p class="muted">"…"</p> }>
                {move || Suspend::new(async move {
                    let lines = lines.await;
                    match lines.is_empty() {
                        true => view! { <p class="muted">"No changes in the last day."</p> }.into_any(),
                        false => view! {
                            <ul>{lines.into_iter().map(|(ts, line)| view! { <li><span class="muted">{local(ts)}</span> " " {line}</li> }).collect_view()}</ul>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
    .into_any()
}

/// The author's rules that listen to or command this device.
#[component]
fn UsedBy(
    /// The device's id.
    device: String,
) -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    if !home.can_add {
        return ().into_any();
    }
    let rules = LocalResource::new(move || async move { api::rules().await.unwrap_or_default() });
    view! {
        <section class="card used-by">
            <h3>"Rules using it"</h3>
            <Transition fallback=|| view! { <p class="muted">"…"</p> }>
                {move || Suspend::new({
                    let device = device.clone();
                    async move {
                        let using: Vec<String> = rules.await.into_iter().filter(|r| r.rule.devices().contains(device.as_str())).map(|r| r.rule.name).collect();
                        match using.is_empty() {
                            true => view! { <p class="muted">"No rule uses it. " <PageLink href="/automations">"Make one"</PageLink></p> }.into_any(),
                            false => view! { <ul>{using.into_iter().map(|n| view! { <li><PageLink href="/automations">{n}</PageLink></li> }).collect_view()}</ul> }.into_any(),
                        }
                    }
                })}
            </Transition>
        </section>
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
