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
    let metrics = device.metrics.clone();
    view! {
        <article class="card device" data-device=device.id.clone()>
            <h2><A href=href>{device.name.clone()}</A></h2>
            <p class="muted class">{if device.belongs_to == BelongsTo::Tenant { "tenant's device".to_owned() } else { device.class.to_string() }}</p>
            {device.plaintext.then(|| view! {
                <p class="warning in-clear" title="Allowed plain MQTT: its secret and readings cross the network unencrypted">"sends in clear"</p>
            })}
            <ul class="metrics">
                {metrics.into_iter().map(|m| {
                    let ts = m.ts;
                    view! {
                        <li data-metric=m.metric.clone()>
                            <span>{m.metric.clone()}</span>
                            <span>
                                <span class="value">{m.value.show()}</span>
                                " " {m.unit.clone().unwrap_or_default()}
                                <br /><span class="muted">{move || ago(ts, home.tick.get().max(now_ms()))}</span>
                            </span>
                        </li>
                    }
                }).collect_view()}
            </ul>
            {device.metrics.is_empty().then(|| view! { <p class="muted">"No readings yet."</p> })}
            {device.rejected.map(|r| view! { <p class="error">"Refused " {r.count} ": " {r.last_reason}</p> })}
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
