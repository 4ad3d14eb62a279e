//! Accepting an invite: a tenant or guest chooses their own name and password.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api;
use crate::app::reload_page;
use crate::components::form::FormError;

#[component]
pub fn InvitePage() -> impl IntoView {
    let code = RwSignal::new(String::new());
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = FormError::new();
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        error.clear();
        spawn_local(async move {
            let result =
                api::accept_invite(&code.get_untracked(), &username.get_untracked(), &password.get_untracked()).await;
            match result {
                Ok(()) => reload_page(),
                Err(e) => error.set(e),
            }
        });
    };
    view! {
        <main>
            <h1>"Hearth"</h1>
            <p>"You were invited to this home. Choose your own name and password: nobody else will know it."</p>
            <form on:submit=submit>
                <label>"Invite code"
                    <input id="invite-code-input" autocomplete="off" required
                        prop:value=code on:input=move |ev| code.set(event_target_value(&ev)) />
                    {error.beside("code")}</label>
                <label>"Your name"
                    <input id="invite-username" autocomplete="username" required
                        prop:value=username on:input=move |ev| username.set(event_target_value(&ev)) />
                    {error.beside("username")}</label>
                <label>"Password (at least 10 characters)"
                    <input id="invite-password" type="password" autocomplete="new-password" required
                        prop:value=password on:input=move |ev| password.set(event_target_value(&ev)) />
                    {error.beside("password")}</label>
                <button id="invite-submit" type="submit">"Join"</button>
                {error.general()}
            </form>
            <p class="muted"><a href="/">"I already have an account"</a></p>
        </main>
    }
}
