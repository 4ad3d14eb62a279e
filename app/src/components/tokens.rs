//! API tokens for scripts (made with a name and a lifetime, shown once, listed by name and
//! expiry, revoked with a button), and the security log.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use hearth_model::account::{SecurityEvent, Token, TokenInfo};
use hearth_model::devices::TlsInfo;

use crate::api;
use crate::components::confirm::use_confirm;
use crate::components::form::FormError;
use crate::components::load::{Loading, latest};
use crate::time::local;

#[component]
pub fn Tokens() -> impl IntoView {
    let resource = LocalResource::new(api::tokens);
    let tokens: Memo<Vec<TokenInfo>> = latest(resource);
    let confirm = use_confirm();
    let name = RwSignal::new(String::new());
    let days = RwSignal::new(String::from("90"));
    let made = RwSignal::new(None::<Token>);
    let error = FormError::new();
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        error.clear();
        let days = days.get_untracked().trim().parse::<u16>().ok();
        spawn_local(async move {
            match api::create_token(&name.get_untracked(), days).await {
                Ok(t) => {
                    made.set(Some(t));
                    name.set(String::new());
                    resource.refetch();
                }
                Err(e) => error.set(e),
            }
        });
    };
    view! {
        <section class="card" id="tokens">
            <h3>"API tokens"</h3>
            <p class="muted">"For scripts: send " <code>"Authorization: Bearer <token>"</code>
                ". A token acts as you until it expires or you revoke it."</p>
            <Loading resource waiting="Loading tokens…" />
            <ul>
                <For each=move || tokens.get() key=|t| t.id let:t>
                    <li>{t.name.clone()} " — expires " {local(t.expires)} " "
                        <button class="secondary revoke-token" on:click=move |_| confirm.ask(
                            format!("Revoke the token “{}”?", t.name),
                            "Scripts using it are refused from their next request. It cannot be brought back; you can make a new one.",
                            "Revoke token",
                            move || spawn_local(async move {
                                match api::revoke_token(t.id).await {
                                    Ok(()) => resource.refetch(),
                                    Err(e) => error.set(e),
                                }
                            }),
                        )>"Revoke"</button>
                    </li>
                </For>
            </ul>
            <form on:submit=submit class="row">
                <label>"Name " <input id="token-name" prop:value=move || name.get()
                    on:input=move |ev| name.set(event_target_value(&ev)) /></label>
                {error.beside("name")}
                <label>"Days " <input id="token-days" type="number" min="1" max="365" prop:value=move || days.get()
                    on:input=move |ev| days.set(event_target_value(&ev)) /></label>
                {error.beside("days")}
                <button type="submit">"Make a token"</button>
            </form>
            {error.general()}
            {move || made.get().map(|t| view! {
                <p>"Your new token (shown only now; it expires " {local(t.expires)} "):"</p>
                <p><code id="new-token">{t.token}</code></p>
            })}
        </section>
    }
}

/// What happened to the household's accounts, devices and grants, and from where: logins
/// and failures (repeated failures counted in one line), credentials, tokens, classes,
/// tenancies, guests, grants.
#[component]
pub fn SecurityLog() -> impl IntoView {
    let tls = LocalResource::new(api::tls_info);
    let info: Memo<Option<TlsInfo>> = Memo::new(move |_| tls.get().and_then(Result::ok));
    let resource = LocalResource::new(api::security_log);
    let events: Memo<Vec<SecurityEvent>> = latest(resource);
    view! {
        <section class="card" id="security-log">
            <h3>"Security log"</h3>
            {move || info.get().and_then(|i| i.fingerprint).map(|f| view! {
                <p id="ca-fingerprint">"The hub's certificate authority (SHA-256): " <code>{f}</code>
                   " · " <a href="/hearth-ca.pem" download="hearth-ca.pem">"hearth-ca.pem"</a></p>
            })}
            <Loading resource waiting="Loading the security log…" />
            <button class="secondary" on:click=move |_| resource.refetch()>"Refresh"</button>
            <table>
                <thead><tr><th>"When"</th><th>"What"</th><th>"Who"</th><th>"From"</th><th>"Times"</th></tr></thead>
                <tbody>
                    <For each=move || events.get() key=|e| e.id let:e>
                        <tr class="security-event" data-kind=e.kind.clone()>
                            <td>{local(e.at)}</td>
                            <td>{format!("{}: {}", e.kind, e.detail)}</td>
                            <td>{e.actor.unwrap_or_default()}</td>
                            <td>{e.source.unwrap_or_default()}</td>
                            <td>{e.count}</td>
                        </tr>
                    </For>
                </tbody>
            </table>
        </section>
    }
}
