//! First run: the setup code (printed by the hub) creates the owner account.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use hearth_model::Me;

use crate::api;
use crate::components::form::FormError;

#[component]
pub fn Setup(
    /// Called with the new owner once the account exists (the session cookie is set).
    on_done: impl Fn(Me) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let code = RwSignal::new(String::new());
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = FormError::new();
    let busy = RwSignal::new(false);
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.clear();
        spawn_local(async move {
            match api::setup(&code.get_untracked(), &username.get_untracked(), &password.get_untracked()).await {
                Ok(me) => on_done(me),
                Err(e) => error.set(e),
            }
            busy.set(false);
        });
    };
    view! {
        <main>
            <h1>"Welcome to Hearth"</h1>
            <p>"Enter the setup code your hub printed when it started (it is also in the file "
               <code>"data/setup-code"</code>" on the hub), and choose the owner's name and password."</p>
            <form on:submit=submit>
                <label>"Setup code"
                    <input id="setup-code" autocomplete="off" required
                        prop:value=code on:input=move |ev| code.set(event_target_value(&ev)) />
                    {error.beside("code")}
                </label>
                <label>"Your name"
                    <input id="setup-username" autocomplete="username" required
                        prop:value=username on:input=move |ev| username.set(event_target_value(&ev)) />
                    {error.beside("username")}
                </label>
                <label>"Password (at least 10 characters)"
                    <input id="setup-password" type="password" autocomplete="new-password" required minlength="10"
                        prop:value=password on:input=move |ev| password.set(event_target_value(&ev)) />
                    {error.beside("password")}
                </label>
                <button id="setup-submit" type="submit" disabled=busy>"Create owner account"</button>
                {error.general()}
            </form>
        </main>
    }
}
