//! Log in with name and password.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use hearth_model::Me;

use crate::api;

#[component]
pub fn Login(
    /// Called with the user once logged in.
    on_done: impl Fn(Me) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        spawn_local(async move {
            match api::login(&username.get_untracked(), &password.get_untracked()).await {
                Ok(me) => on_done(me),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <main>
            <h1>"Hearth"</h1>
            <form on:submit=submit>
                <label>"Name"
                    <input id="login-username" autocomplete="username" required
                        prop:value=username on:input=move |ev| username.set(event_target_value(&ev)) />
                </label>
                <label>"Password"
                    <input id="login-password" type="password" autocomplete="current-password" required
                        prop:value=password on:input=move |ev| password.set(event_target_value(&ev)) />
                </label>
                <button id="login-submit" type="submit">"Log in"</button>
                {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            </form>
        </main>
    }
}
