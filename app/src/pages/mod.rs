//! One module per screen. The home build (`home`) draws the home, a device and the
//! bridges; the management build (`manage`) draws automations, sharing and tenancies
//! (`hearth_model::pages`). A page of the other build is [`Elsewhere`].

use leptos::prelude::*;

#[cfg(feature = "manage")]
pub mod automations;
#[cfg(feature = "home")]
pub mod dashboard;
#[cfg(feature = "home")]
pub mod device;
pub mod invite;
pub mod login;
#[cfg(feature = "manage")]
pub mod people;
pub mod setup;
#[cfg(feature = "manage")]
pub mod sharing;

use hearth_model::Me;
use hearth_model::pages::managed;

/// Whether this build draws the page at `path`; a link to any other leaves it.
pub fn here(path: &str) -> bool {
    // The builds' features, as values (clippy reads a literal `if` as always one way).
    const HOME: bool = cfg!(feature = "home");
    const MANAGE: bool = cfg!(feature = "manage");
    if managed(path) { MANAGE } else { HOME }
}

/// A link to one of the UI's pages: routed in the page when this build draws it, else an
/// ordinary link, which loads the other build from the hub.
#[component]
pub fn PageLink(href: &'static str, children: Children) -> impl IntoView {
    if here(href) {
        view! { <leptos_router::components::A href=href>{children()}</leptos_router::components::A> }.into_any()
    } else {
        view! { <a href=href rel="external">{children()}</a> }.into_any()
    }
}

/// A page the other build draws, reached by routing within this one (history, a link not
/// made with [`PageLink`]): the page is loaded from the hub, which answers with that build.
/// Not when the hub already answered this path with this build (the other is missing from
/// it): that would load it again for ever, so it says so instead.
#[component]
pub fn Elsewhere() -> impl IntoView {
    let window = web_sys::window();
    let path = window.as_ref().and_then(|w| w.location().pathname().ok()).unwrap_or_default();
    if crate::app::first_path() != path
        && let Some(window) = window
        && window.location().reload().is_ok()
    {
        return ().into_any();
    }
    view! { <p class="error">"This page is not part of this hub's web UI."</p> }.into_any()
}

/// The sharing page, for `me`.
#[cfg(feature = "manage")]
pub fn sharing(me: Me) -> AnyView {
    view! { <sharing::SharingPage me /> }.into_any()
}

/// The tenancies page, for `me`.
#[cfg(feature = "manage")]
pub fn people(me: Me) -> AnyView {
    view! { <people::PeoplePage me /> }.into_any()
}

/// In the home build, the sharing and tenancies pages are [`Elsewhere`].
#[cfg(not(feature = "manage"))]
pub fn sharing(_: Me) -> AnyView {
    view! { <Elsewhere /> }.into_any()
}
#[cfg(not(feature = "manage"))]
pub use sharing as people;
