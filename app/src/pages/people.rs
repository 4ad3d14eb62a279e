//! People: the owner's tenancies (invite a tenant, end a tenancy) and, for a tenant, their
//! tenancy with the choice to destroy its data once it has ended.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use hearth_model::people::{Guest, Invite, Tenancy};
use hearth_model::present;
use hearth_model::{Me, Role};

use crate::api;
use crate::app::Home;
use crate::components::confirm::use_confirm;
use crate::components::form::FormError;
use crate::components::load::{Loading, latest};
use crate::components::tokens::{SecurityLog, Tokens};
use crate::time::{local, now_ms};

const DAY_MS: i64 = 86_400_000;

#[component]
pub fn PeoplePage(
    /// The logged-in user.
    me: Me,
) -> impl IntoView {
    let resource = LocalResource::new(api::tenancies);
    let tenancies: Memo<Vec<Tenancy>> = latest(resource);
    let error = RwSignal::new(None::<String>);
    let reload = move || {
        error.set(None);
        resource.refetch();
    };
    let owner = me.role == Role::Owner;
    view! {
        <h2>{if owner { "Tenancies" } else { "Your tenancy" }}</h2>
        <Loading resource waiting="Loading tenancies…" />
        {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        {owner.then(|| view! { <InviteTenant on_done=reload /> })}
        <div id="tenancies">
            <For each=move || tenancies.get() key=|t| (t.id, t.end, t.shredded, t.tenant.clone()) let:t>
                <TenancyCard tenancy=t owner=owner on_change=reload error=error />
            </For>
        </div>
        <Guests />
        <Tokens />
        <SecurityLog />
        {owner.then(|| view! { <StorageCard /> })}
    }
}

/// `bytes` for people: "740 kB", "12.3 MB", "1.2 GB".
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000_000 => format!("{:.0} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.1} GB", b / 1e9),
    }
}

/// The hub's storage: free space, the database's size, and what the hub writes a day (what
/// wears an SD card out).
#[component]
fn StorageCard() -> impl IntoView {
    let resource = LocalResource::new(api::storage);
    view! {
        <section class="card" id="storage">
            <h3>"Storage"</h3>
            <Loading resource waiting="Loading storage…" />
            {move || resource.get().and_then(Result::ok).map(|s| {
                let free = s.free_bytes.map(|free| format!(
                    "{} free; new readings are refused below {}.", size(free), size(s.reserve_bytes)));
                let database = s.database_bytes.map(|db| format!("The database takes {}.", size(db)));
                let written = s.written_per_day.zip(s.written_over_ms).map(|(day, over)| format!(
                    "The hub writes about {} a day (measured over the last {} minutes).",
                    size(day), (over / 60_000).max(1)));
                view! {
                    <p id="storage-free">{free}</p>
                    <p id="storage-database">{database}</p>
                    <p id="storage-written">{written}</p>
                    <p class="muted">"An SD card wears out from writing. Values you need not keep can be left unrecorded on their device's page; a USB SSD lasts far longer (the README says how to move the hub's data there)."</p>
                }
            })}
        </section>
    }
}

/// Guests: read-only access to chosen devices, and only to the inviter's readings of them.
#[component]
fn Guests() -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let resource = LocalResource::new(api::guests);
    let guests: Memo<Vec<Guest>> = latest(resource);
    let confirm = use_confirm();
    let chosen = RwSignal::new(Vec::<String>::new());
    let invite = RwSignal::new(None::<Invite>);
    let error = FormError::new();
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        error.clear();
        spawn_local(async move {
            match api::invite_guest(&chosen.get_untracked()).await {
                Ok(i) => invite.set(Some(i)),
                Err(e) => error.set(e),
            }
        });
    };
    view! {
        <section class="card" id="guests">
            <h3>"Guests"</h3>
            <p class="muted">"A guest sees the devices you choose, read-only, and only your readings of them."</p>
            <Loading resource waiting="Loading guests…" />
            <ul>
                <For each=move || guests.get() key=|g| (g.id, g.devices.clone()) let:g>
                    <li>{g.username.clone()} " — " {g.devices.join(", ")} " "
                        <button class="secondary remove-guest" on:click=move |_| confirm.ask(
                            format!("Remove the guest {}?", g.username),
                            "Their account is deleted at once: they are logged out and see nothing more. Inviting them again makes a new one.",
                            "Remove guest",
                            move || spawn_local(async move {
                                match api::remove_guest(g.id).await {
                                    Ok(()) => resource.refetch(),
                                    Err(e) => error.set(e),
                                }
                            }),
                        )>"Remove"</button>
                    </li>
                </For>
            </ul>
            <form on:submit=submit>
                // The home's devices by room, as on the home page (bridges are no one's to see).
                {move || present::by_room(&home.devices.get()).into_iter().map(|(room, list)| view! {
                    <fieldset class="room-choice">
                        <legend>{room}</legend>
                        {list.into_iter().map(|d| {
                            let id = d.id.clone();
                            view! {
                                <label class="inline"><input type="checkbox" class="guest-device" value=d.id.clone() on:change=move |ev| {
                                    let on = event_target_checked(&ev);
                                    let id = id.clone();
                                    chosen.update(|c| if on { c.push(id) } else { c.retain(|x| *x != id) });
                                } /> " " {d.name}</label>
                            }
                        }).collect_view()}
                    </fieldset>
                }).collect_view()}
                {error.beside("devices")}
                <button type="submit" id="guest-invite">"Invite a guest"</button>
                {error.general()}
            </form>
            {move || invite.get().map(|i| view! {
                <p>"Give the guest this code (valid until " {local(i.expires)} "), to enter at " <code>"/invite"</code> ":"</p>
                <p><code id="guest-code">{i.code}</code></p>
            })}
        </section>
    }
    .into_any()
}

#[component]
fn TenancyCard(
    /// The tenancy to show.
    tenancy: Tenancy,
    /// Whether the viewer is the owner (else the tenant).
    owner: bool,
    /// Called after a change.
    on_change: impl Fn() + Copy + Send + Sync + 'static,
    /// Where errors go.
    error: RwSignal<Option<String>>,
) -> impl IntoView {
    let id = tenancy.id;
    let now = now_ms();
    let ended = tenancy.end.is_some_and(|e| e <= now);
    let shredded = tenancy.shredded.is_some();
    let run = move |f: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), api::ApiError>>>>| {
        spawn_local(async move {
            match f.await {
                Ok(()) => on_change(),
                Err(e) => error.set(Some(e.to_string())),
            }
        })
    };
    let confirm = RwSignal::new(false);
    let ask = use_confirm();
    let tenant = tenancy.tenant.clone().unwrap_or_else(|| "the invited tenant".into());
    let retention = tenancy.retention_days;
    let end = move |_| {
        ask.ask(
            format!("End {tenant}'s tenancy now?"),
            format!(
                "From now on they can only read and export their own data; their own devices are cut off. \
                 Household readings from now on are yours. Their data is destroyed {} days from now, or \
                 sooner if they destroy it themselves.",
                retention
            ),
            "End tenancy",
            move || run(Box::pin(async move { api::end_tenancy(id).await.map(drop) })),
        )
    };
    view! {
        <article class="card tenancy" data-tenancy=id>
            <p><strong>{tenancy.tenant.clone().unwrap_or_else(|| "Invite not yet accepted".into())}</strong></p>
            <p>"From " {local(tenancy.start)} " "
                {tenancy.end.map_or_else(|| "(open-ended)".to_owned(), |e| format!("until {}", local(e)))}</p>
            {if shredded {
                view! { <p class="muted">"Its data was destroyed on " {tenancy.shredded.map(local)} "."</p> }.into_any()
            } else {
                view! { <p class="muted">{tenancy.shred_due.map(|d| format!(
                    "Its data will be destroyed on {} ({} days after it ends).", local(d), tenancy.retention_days
                ))}</p> }.into_any()
            }}
            {(owner && !ended && !shredded).then(|| view! {
                <button class="secondary end-tenancy" on:click=end>
                    "End this tenancy now"
                </button>
            })}
            {(!owner && ended && !shredded).then(|| view! {
                <p>"Your tenancy has ended. Export your data on the Sharing page, then you can destroy it here. This cannot be undone."</p>
                <label><input type="checkbox" id="shred-confirm" on:change=move |ev| confirm.set(event_target_checked(&ev)) />
                    " I understand my data will be gone for good"</label>
                <button id="shred" prop:disabled=move || !confirm.get()
                    on:click=move |_| run(Box::pin(async move { api::shred_tenancy(id).await }))>"Destroy my data now"</button>
            })}
        </article>
    }
}

/// The owner creates a tenancy and gets the tenant's one-time invite code.
#[component]
fn InviteTenant(
    /// Called once a tenancy was created.
    on_done: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let months = RwSignal::new(String::new());
    let retention = RwSignal::new(String::new());
    let invite = RwSignal::new(None::<Invite>);
    let error = FormError::new();
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        error.clear();
        let end = months.get_untracked().trim().parse::<i64>().ok().map(|m| now_ms() + m * 30 * DAY_MS);
        let retention = retention.get_untracked().trim().parse::<u32>().ok();
        spawn_local(async move {
            match api::create_tenancy(end, retention).await {
                Ok(i) => {
                    invite.set(Some(i));
                    on_done();
                }
                Err(e) => error.set(e),
            }
        });
    };
    view! {
        <section class="card">
            <h3>"Invite a tenant"</h3>
            <p class="muted">"The tenancy starts now. During it, household devices' readings are the tenant's: you will not see them unless they share them with you."</p>
            <form on:submit=submit>
                <label>"Length in months (empty: open-ended)"
                    <input id="tenancy-months" inputmode="numeric" prop:value=months on:input=move |ev| months.set(event_target_value(&ev)) />
                    {error.beside("end")}</label>
                <label>"Keep the data this many days after it ends (empty: the hub's default)"
                    <input id="tenancy-retention" inputmode="numeric" prop:value=retention on:input=move |ev| retention.set(event_target_value(&ev)) />
                    {error.beside("retention_days")}</label>
                <button type="submit" id="tenancy-create">"Create the tenancy"</button>
                {error.general()}
            </form>
            {move || invite.get().map(|i| view! {
                <p>"Give the tenant this code (valid until " {local(i.expires)} "), to enter at "
                   <code>"/invite"</code> " on this hub:"</p>
                <p><code id="invite-code">{i.code}</code></p>
            })}
        </section>
    }
}
