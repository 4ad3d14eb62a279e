//! Sharing: the consent inbox (requests in plain words: grant, narrow, deny), grants with
//! their receipts and revocation, the access log and its verification, the value ledger,
//! export, and registering recipients.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use hearth_model::consent::{
    Checkpoint, DataRequest, Grant, GrantStatus, LedgerLine, LogEntry, LogKind, Offer, RequestStatus, Terms,
    Verification,
};
use hearth_model::devices::{ClassProposal, ProposalStatus};
use hearth_model::people::{Recipient, RecipientCredentials};
use hearth_model::{Granularity, Me, Period, Role};

use crate::api;
use crate::components::confirm::use_confirm;
use crate::components::form::FormError;
use crate::components::load::{Loading, latest};
use crate::time::local;

/// Everything on the page, fetched together.
#[derive(Clone, Default, PartialEq)]
struct Data {
    requests: Vec<DataRequest>,
    /// The owner's proposals to reclassify a device (a tenant's to answer).
    proposals: Vec<ClassProposal>,
    grants: Vec<Grant>,
    log: Vec<LogEntry>,
    ledger: Vec<LedgerLine>,
}

/// The page's five lists, asked for at once: on a slow phone one round trip, not five.
async fn fetch() -> Result<Data, api::ApiError> {
    let (requests, proposals, grants, log, ledger) = futures_util::future::try_join5(
        api::consent_requests(),
        api::class_proposals(),
        api::grants(),
        api::access_log(),
        api::ledger(),
    )
    .await?;
    Ok(Data { requests, proposals, grants, log, ledger })
}

fn granularity_words(g: Granularity) -> &'static str {
    match g {
        Granularity::Raw => "every single reading",
        Granularity::Min15 => "15-minute summaries",
        Granularity::Hour => "hourly summaries",
        Granularity::Day => "daily summaries",
    }
}

fn what(t: &Terms) -> String {
    let mut items: Vec<String> = t.categories.iter().map(|c| format!("{c} data")).collect();
    items.extend(t.metrics.iter().map(|m| format!("“{m}” readings")));
    items.join(", ")
}

fn offer_words(o: &Offer) -> String {
    match (&o.amount, &o.currency, o.period) {
        (Some(a), Some(c), Some(Period::Once)) => format!("{} ({a} {c}, once)", o.text),
        (Some(a), Some(c), Some(p)) => format!("{} ({a} {c} per {p})", o.text),
        _ => o.text.clone(),
    }
}

/// A request in plain words, e.g. "Northwind Energy (power company) asks to see your energy
/// data as hourly summaries, from … onwards, for 90 days, to “…”. In return: …".
pub fn describe(r: &DataRequest) -> String {
    let t = &r.terms;
    let until = t.window_to.map_or_else(|| "onwards".to_owned(), |to| format!("until {}", local(to)));
    format!(
        "{} ({}) asks to see your {} as {}, from {} {until}, for {} days, to “{}”. In return: {}.",
        r.recipient,
        r.recipient_kind,
        what(t),
        granularity_words(t.granularity),
        local(t.window_from),
        t.duration_days,
        t.purpose,
        offer_words(&t.offer)
    )
}

#[component]
pub fn SharingPage(
    /// The logged-in user: a tenant answers the owner's questions here.
    me: Me,
) -> impl IntoView {
    let tenant = me.role == Role::Tenant;
    let resource = LocalResource::new(fetch);
    let data = latest(resource);
    // The last action's error; a successful one clears it.
    let error = RwSignal::new(None::<String>);
    let act = move |result: Result<(), api::ApiError>| match result {
        Ok(()) => {
            error.set(None);
            resource.refetch();
        }
        Err(e) => error.set(Some(e.to_string())),
    };
    let verification = RwSignal::new(None::<Verification>);
    let kept = RwSignal::new(kept_checkpoint(&me.username));
    let username = me.username.clone();
    // Checks the log, against the checkpoint this browser kept if any; then, if all is
    // well, keeps a fresh one. A checkpoint that no longer matches is kept as evidence.
    let verify = move || {
        let username = username.clone();
        spawn_local(async move {
            let held = kept.get_untracked().map(|c: Checkpoint| c.jws);
            match api::verify_log(held.as_deref()).await {
                Ok(v) => {
                    let ok = v.ok;
                    verification.set(Some(v));
                    if ok && let Ok(fresh) = api::checkpoint().await {
                        keep_checkpoint(&username, &fresh);
                        kept.set(Some(fresh));
                    }
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        })
    };
    if tenant || me.role == Role::Owner {
        verify();
    }

    view! {
        <h2>"Sharing your data"</h2>
        <Loading resource waiting="Loading what you share…" />
        {move || error.get().map(|e| view! { <p class="error">{e}</p> })}

        <section class="card" id="inbox">
            <h3>"Requests"</h3>
            {move || data.with(|d| !d.requests.iter().any(|r| r.status == RequestStatus::Pending))
                .then(|| view! { <p class="muted">"No requests waiting for you."</p> })}
            <For
                each=move || data.with(|d| d.requests.iter().filter(|r| r.status == RequestStatus::Pending).cloned().collect::<Vec<_>>())
                key=|r| r.id
                let:r
            >
                <RequestItem r act />
            </For>
        </section>

        <section class="card" id="class-proposals"
            style:display=move || if tenant && data.with(|d| d.proposals.iter().any(waiting)) { "" } else { "none" }>
            <h3>"Questions from the owner"</h3>
            <For each=move || data.with(|d| d.proposals.iter().filter(|p| waiting(p)).cloned().collect::<Vec<_>>())
                key=|p| p.id let:p>
                <div class="proposal" id=format!("proposal-{}", p.id)>
                    <p>"The owner asks to make “" {p.device_name.clone()} "” a " {p.class.as_str()}
                       " device. Its readings would then be the owner's, from when you agree; those made before stay yours."</p>
                    <button class="accept-class" on:click=move |_| {
                        spawn_local(async move { act(api::decide_class(p.id, true).await.map(drop)) });
                    }>"Agree"</button>
                    " "
                    <button class="secondary decline-class" on:click=move |_| {
                        spawn_local(async move { act(api::decide_class(p.id, false).await.map(drop)) });
                    }>"Decline"</button>
                </div>
            </For>
        </section>

        <section class="card" id="grants">
            <h3>"What you share"</h3>
            {move || data.with(|d| d.grants.is_empty())
                .then(|| view! { <p class="muted">"You share nothing with anyone."</p> })}
            // Keyed by what a grant shows, so a grant that changed is redrawn and no other.
            <For
                each=move || data.get().grants
                key=|g| (g.id.clone(), g.status, g.receipts.len())
                let:g
            >
                <GrantItem g act />
            </For>
        </section>

        <section class="card" id="access-log">
            <h3>"Who read your data"</h3>
            <button class="secondary" id="verify-log" on:click=move |_| verify()>"Verify the log"</button>
            {move || kept.get().map(|c| view! {
                " "
                <a id="checkpoint-download" download="hearth-log-checkpoint.json"
                    href=format!("data:application/json;charset=utf-8,{}", serde_json::to_string(&c).unwrap_or_default())>
                    "Download a checkpoint"
                </a>
                <span class="muted">" (entry " {c.seq} ", " {local(c.at)} "; "
                    <code>"hub verify-log --checkpoint FILE"</code> " holds the hub to it)"</span>
            })}
            {move || verification.get().map(|v| if v.ok {
                let held = if v.checkpoint == Some(true) { " It still holds everything it held at your last checkpoint." } else { "" };
                view! { <p class="ok" id="verify-result">"Intact: " {v.entries.unwrap_or(0)} " entries verified, none changed or removed." {held}</p> }.into_any()
            } else {
                view! { <p class="error" id="verify-result">"Tampering detected: " {v.error.unwrap_or_default()}</p> }.into_any()
            })}
            <table>
                <thead><tr><th>"When"</th><th>"Who"</th><th>"What"</th></tr></thead>
                <tbody>
                    {move || data.get().log.into_iter().rev().map(|e| {
                        let what = match e.kind {
                            LogKind::Read => format!(
                                "read {} ({} rows)",
                                e.detail_json["metrics"].as_array().map(|m| m.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
                                e.detail_json["rows"]
                            ),
                            other => other.to_string(),
                        };
                        view! { <tr class=format!("log-{}", e.kind)><td>{local(e.ts)}</td><td>{e.recipient}</td><td>{what}</td></tr> }
                    }).collect_view()}
                </tbody>
            </table>
        </section>

        <section class="card" id="ledger">
            <h3>"What you get for it"</h3>
            {move || data.get().ledger.into_iter().map(|l| view! {
                <p>
                    <strong>{l.recipient}</strong> ": " {offer_words(&l.offer)} " — " {l.status.as_str()} ". "
                    {match (l.accrued.amount, l.offer.currency) {
                        (Some(a), Some(c)) => format!("Accrued so far: {a} {c}."),
                        _ => String::new(),
                    }}
                </p>
            }).collect_view()}
        </section>

        <section class="card" id="export">
            <h3>"Your data"</h3>
            <p>"Download everything that is yours: "
                <a href="/api/export?format=csv" download="hearth-export.csv">"CSV"</a> " · "
                <a href="/api/export?format=json" download="hearth-export.json">"JSON"</a>
            </p>
        </section>

        <Recipients />
    }
}

/// Where this browser keeps a person's last checkpoint of the access log.
fn checkpoint_slot(username: &str) -> String {
    format!("hearth-log-checkpoint:{username}")
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window().and_then(|w| w.local_storage().ok().flatten())
}

/// The checkpoint this browser kept for `username`, if any.
fn kept_checkpoint(username: &str) -> Option<Checkpoint> {
    let text = storage()?.get_item(&checkpoint_slot(username)).ok()??;
    api::parse(&text).ok()
}

fn keep_checkpoint(username: &str, checkpoint: &Checkpoint) {
    if let (Some(storage), Ok(text)) = (storage(), serde_json::to_string(checkpoint)) {
        let _ = storage.set_item(&checkpoint_slot(username), &text);
    }
}

/// A proposed class change still waiting for an answer.
fn waiting(p: &ClassProposal) -> bool {
    p.status == ProposalStatus::Pending
}

/// A pending request in plain words, with the choice of how finely to share.
#[component]
fn RequestItem(
    r: DataRequest,
    act: impl Fn(Result<(), api::ApiError>) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let id = r.id;
    let asked = r.terms.granularity;
    let chosen = RwSignal::new(asked);
    // Only as finely as asked, or coarser.
    let choices: Vec<Granularity> = Granularity::ALL.iter().copied().filter(|g| *g >= asked).collect();
    view! {
        <div class="request" id=format!("request-{id}")>
            <p class="plain">{describe(&r)}</p>
            <label>"Share as "
                <select class="granularity" on:change=move |ev| {
                    if let Ok(g) = event_target_value(&ev).parse() {
                        chosen.set(g);
                    }
                }>
                    {choices.into_iter().map(|g| view! {
                        <option value=g.as_str() selected=g == asked>{granularity_words(g)}</option>
                    }).collect_view()}
                </select>
            </label>
            <button class="grant" on:click=move |_| {
                let g = chosen.get_untracked();
                spawn_local(async move { act(api::grant(id, Some(g)).await.map(drop)) });
            }>"Grant"</button>
            " "
            <button class="secondary deny" on:click=move |_| {
                spawn_local(async move { act(api::deny(id).await) });
            }>"Deny"</button>
        </div>
    }
}

/// A grant, its receipts, and revocation while it is active.
#[component]
fn GrantItem(g: Grant, act: impl Fn(Result<(), api::ApiError>) + Copy + Send + Sync + 'static) -> impl IntoView {
    let id = g.id.clone();
    let active = g.status == GrantStatus::Active;
    let confirm = use_confirm();
    let recipient = g.recipient.clone();
    let revoke = move |_| {
        let id = id.clone();
        confirm.ask(
            format!("Revoke what {recipient} was granted?"),
            "Its next request is refused and the revocation gets its own receipt. What it already read, it keeps.",
            "Revoke grant",
            move || {
                let id = id.clone();
                spawn_local(async move { act(api::revoke(&id).await.map(drop)) });
            },
        )
    };
    view! {
        <div class="grant-item" data-grant=g.id.clone() data-status=g.status.as_str()>
            <p>
                <strong>{g.recipient.clone()}</strong> ": " {what(&g.terms)} ", " {granularity_words(g.terms.granularity)}
                ". " <span class="status">{g.status.as_str()}</span>
                {active.then(|| format!(" until {}", local(g.expires)))}
            </p>
            <p class="muted">
                {g.receipts.iter().map(|r| view! {
                    <a class="receipt" download=format!("hearth-receipt-{}-{}.jws", r.event, r.id)
                        href=format!("data:application/jwt;charset=utf-8,{}", r.jws)>
                        "Receipt (" {r.event.as_str()} ", " {local(r.created)} ")"
                    </a>
                    " "
                }).collect_view()}
            </p>
            {active.then(|| view! {
                <button class="secondary revoke" on:click=revoke>"Revoke"</button>
            })}
        </div>
    }
}

/// Registering companies that may ask for data; their credentials are shown once.
#[component]
fn Recipients() -> impl IntoView {
    let resource = LocalResource::new(api::recipients);
    let list: Memo<Vec<Recipient>> = latest(resource);
    let issued = RwSignal::new(None::<RecipientCredentials>);
    let error = FormError::new();
    let name = RwSignal::new(String::new());
    let kind = RwSignal::new(String::new());
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        error.clear();
        spawn_local(async move {
            match api::register_recipient(&name.get_untracked(), &kind.get_untracked()).await {
                Ok(c) => {
                    issued.set(Some(c));
                    resource.refetch();
                }
                Err(e) => error.set(e),
            }
        });
    };
    view! {
        <section class="card" id="recipients">
            <h3>"Companies you deal with"</h3>
            <Loading resource waiting="Loading companies…" />
            <ul>
                <For each=move || list.get() key=|r| r.id.clone() let:r>
                    <li>{r.name} " (" {r.kind} ")"</li>
                </For>
            </ul>
            <form on:submit=submit>
                <label>"Name" <input id="recipient-name" required prop:value=name on:input=move |ev| name.set(event_target_value(&ev)) />
                    {error.beside("name")}</label>
                <label>"Kind" <input id="recipient-kind" placeholder="power company, insurer…" required
                    prop:value=kind on:input=move |ev| kind.set(event_target_value(&ev)) />
                    {error.beside("kind")}</label>
                <button type="submit">"Register"</button>
                {error.general()}
            </form>
            {move || issued.get().map(|c| view! {
                <p>"Give these to the company (shown once). It authenticates with HTTP Basic on /api/share."</p>
                <p>"Client id: " <code id="client-id">{c.client_id}</code></p>
                <p>"Client secret: " <code id="client-secret">{c.client_secret}</code></p>
            })}
        </section>
    }
}
