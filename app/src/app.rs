//! The app shell: decides between first-run setup, login and the home views, owns the
//! shared device list, and keeps it current from the hub's live stream.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use hearth_model::devices::{Device, Metric};
use hearth_model::present;
use hearth_model::{Me, Reading, Role};

use crate::api::{self, ApiError};
use crate::components::confirm::{Confirm, ConfirmDialog};
use crate::components::icon::Icon;
#[cfg(not(feature = "manage"))]
use crate::pages::Elsewhere as AutomationsPage;
use crate::pages::PageLink;
#[cfg(feature = "manage")]
use crate::pages::automations::AutomationsPage;
#[cfg(not(feature = "home"))]
use crate::pages::{Elsewhere as BridgesPage, Elsewhere as Dashboard, Elsewhere as DevicePage};
#[cfg(feature = "home")]
use crate::pages::{
    dashboard::{BridgesPage, Dashboard},
    device::DevicePage,
};
use crate::pages::{invite::InvitePage, login::Login, setup::Setup};

/// The path this page was loaded at, before any routing: the hub chose the build by it.
/// `main` reads it before mounting; read first later, it would be the routed path, and
/// `Elsewhere` would say the page is missing instead of loading it (safe, never a loop).
pub fn first_path() -> &'static str {
    static FIRST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FIRST.get_or_init(|| web_sys::window().and_then(|w| w.location().pathname().ok()).unwrap_or_default())
}

/// Where the user is in the app's life.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    Loading,
    /// The hub has no owner yet: enter the setup code.
    Setup,
    Login,
    /// Not logged in, at `/invite`: join with an invite code.
    Invite,
    Ready(Me),
    Unreachable(String),
}

/// Shared by every page once logged in.
#[derive(Clone, Copy)]
pub struct Home {
    pub devices: RwSignal<Vec<Device>>,
    /// The device list has been fetched at least once.
    pub loaded: RwSignal<bool>,
    /// Whether the live stream is connected.
    pub live: RwSignal<bool>,
    /// When the live stream was last heard from (a reading, a tick, its opening), ms.
    pub heard: RwSignal<i64>,
    /// Since when the live stream has been down, if it is.
    pub down_since: RwSignal<Option<i64>>,
    /// Bumped every second, so "12 s ago" stays true.
    pub tick: RwSignal<i64>,
    pub error: RwSignal<Option<String>>,
    /// Owners and tenants add devices; guests only look.
    pub can_add: bool,
}

impl Home {
    /// Fetches the device list again.
    pub fn reload(self) {
        spawn_local(async move {
            match api::devices().await {
                Ok(mut devices) => {
                    self.devices.with_untracked(|heard| keep_heard(heard, &mut devices, crate::time::now_ms()));
                    self.devices.set(devices);
                    self.loaded.set(true);
                    self.error.set(None);
                }
                Err(ApiError::Unauthorized) => reload_page(),
                Err(e) => self.error.set(Some(e.to_string())),
            }
        });
    }

    /// Applies readings from the live stream; an unknown device means the list is stale.
    fn apply(self, batch: Vec<Reading>) {
        let mut unknown = false;
        self.devices.update(|devices| {
            for r in batch {
                let Some(device) = devices.iter_mut().find(|d| d.id == r.device) else {
                    unknown = true;
                    continue;
                };
                match device.metrics.iter_mut().find(|m| m.metric == r.metric) {
                    Some(m) if m.ts > r.ts => {}
                    Some(m) => {
                        // How often it usually comes (`every`) is the hub's to say: the list
                        // brings it again after a reconnect.
                        m.ts = r.ts;
                        m.value = r.value;
                        if r.unit.is_some() {
                            m.unit = r.unit;
                        }
                    }
                    None => {
                        device.metrics.push(Metric {
                            metric: r.metric,
                            unit: r.unit,
                            ts: r.ts,
                            value: r.value,
                            every: None,
                        });
                        present::sort_by_text(&mut device.metrics, |m| m.metric.clone());
                    }
                }
            }
        });
        if unknown {
            self.reload();
        }
    }
}

fn on_invite_page() -> bool {
    web_sys::window().and_then(|w| w.location().pathname().ok()).is_some_and(|p| p == "/invite")
}

/// The live stream tells of a reading when the hub accepts it, the list once it is stored
/// (up to a minute later for readings nobody acknowledges): a list fetched in between must
/// not take back what the stream said. Values heard in the last minute that are newer than
/// the list's are kept.
fn keep_heard(heard: &[Device], fresh: &mut [Device], now: i64) {
    const COMMIT_LAG_MS: i64 = 60_000;
    for device in fresh.iter_mut() {
        let Some(before) = heard.iter().find(|d| d.id == device.id) else { continue };
        for m in before.metrics.iter().filter(|m| now - m.ts < COMMIT_LAG_MS) {
            match device.metrics.iter_mut().find(|f| f.metric == m.metric) {
                Some(f) if f.ts < m.ts => {
                    f.ts = m.ts;
                    f.value = m.value.clone();
                }
                Some(_) => {}
                None => device.metrics.push(m.clone()),
            }
        }
        present::sort_by_text(&mut device.metrics, |m| m.metric.clone());
    }
}

pub fn reload_page() {
    if let Some(window) = web_sys::window() {
        let _ = window.location().set_href("/");
    }
}

/// Removes the frame `index.html` paints before the wasm arrives; the app draws its own.
fn remove_boot_frame() {
    if let Some(boot) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id("boot")) {
        boot.remove();
    }
}

#[component]
pub fn App() -> impl IntoView {
    let phase = RwSignal::new(Phase::Loading);
    spawn_local(async move {
        // Who is logged in first: for someone who is (nearly every visit), that is the one
        // question before the home, a round trip saved on a slow phone.
        let next = match api::me().await {
            Ok(me) => Phase::Ready(me),
            Err(ApiError::Unauthorized) => match api::setup_required().await {
                Ok(true) => Phase::Setup,
                Ok(false) if on_invite_page() => Phase::Invite,
                Ok(false) => Phase::Login,
                Err(e) => Phase::Unreachable(e.to_string()),
            },
            Err(e) => Phase::Unreachable(e.to_string()),
        };
        remove_boot_frame();
        phase.set(next);
    });

    view! {
        {move || match phase.get() {
            // index.html's own frame says "Connecting to your hub…" until the hub answers.
            Phase::Loading => ().into_any(),
            Phase::Unreachable(why) => view! { <main><p class="error">{why}</p></main> }.into_any(),
            Phase::Setup => view! { <Setup on_done=move |me| phase.set(Phase::Ready(me)) /> }.into_any(),
            Phase::Login => view! { <Login on_done=move |me| phase.set(Phase::Ready(me)) /> }.into_any(),
            Phase::Invite => view! { <InvitePage /> }.into_any(),
            Phase::Ready(me) => view! { <Shell me=me /> }.into_any(),
        }}
    }
}

/// The logged-in app: header, live stream, routes.
#[component]
fn Shell(
    /// The logged-in user.
    me: Me,
) -> impl IntoView {
    let home = Home {
        devices: RwSignal::new(Vec::new()),
        loaded: RwSignal::new(false),
        live: RwSignal::new(false),
        heard: RwSignal::new(crate::time::now_ms()),
        down_since: RwSignal::new(None),
        tick: RwSignal::new(crate::time::now_ms()),
        error: RwSignal::new(None),
        can_add: me.is_subject(),
    };
    provide_context(home);
    let confirm = Confirm::provide();
    home.reload();
    connect_live(home);
    let tick = Closure::<dyn FnMut()>::new(move || home.tick.set(crate::time::now_ms()));
    if let Some(window) = web_sys::window() {
        let _ = window.set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), 1000);
    }
    tick.forget();
    // A full card refuses readings: the people whose readings they are hear of it.
    let refusing = RwSignal::new(None::<hearth_model::account::Refusing>);
    if me.is_subject() {
        watch_storage(refusing);
    }

    let subject = me.is_subject();
    let people_me = me.clone();
    let sharing_me = me.clone();
    let role = me.role;
    let logout = move |_| {
        spawn_local(async move {
            let _ = api::logout().await;
            reload_page();
        })
    };
    // On a phone the menu folds behind one button; following a link in it folds it again.
    let menu = RwSignal::new(false);
    let content = NodeRef::<leptos::html::Main>::new();
    view! {
        <Router>
            // The router would take `#main` for a page of its own: focus the content instead.
            <a class="skip" href="#main" on:click=move |ev| {
                ev.prevent_default();
                if let Some(main) = content.get() {
                    let _ = main.focus();
                }
            }>"Skip to content"</a>
            <header>
                <h1><PageLink href="/">"Hearth"</PageLink></h1>
                <span
                    class=move || if home.live.get() { "live on" } else { "live" }
                    role="img"
                    aria-label=move || if home.live.get() { "live updates on" } else { "live updates off" }
                    title=move || if home.live.get() { "live updates on" } else { "live updates off" }
                ></span>
                <button type="button" class="secondary menu-toggle" id="menu-toggle" aria-controls="menu"
                    aria-expanded=move || menu.get().to_string() on:click=move |_| menu.update(|m| *m = !*m)>
                    <Icon icon=icondata_mdi::MdiMenu /> <span class="label">"Menu"</span>
                </button>
                <div id="menu" class:open=menu on:click=move |_| menu.set(false)>
                    <nav aria-label="Pages">
                        <PageLink href="/">"Home"</PageLink>
                        {subject.then(|| view! {
                            <PageLink href="/automations">"Automations"</PageLink>
                            <PageLink href="/sharing">"Sharing"</PageLink>
                            <PageLink href="/people">{if role == Role::Owner { "Tenancies" } else { "Tenancy" }}</PageLink>
                        })}
                    </nav>
                    <span class="muted" id="whoami">{me.username} " (" {me.role.as_str()} ")"</span>
                    <button class="secondary" id="logout" on:click=logout>"Log out"</button>
                </div>
            </header>
            <HubAway home />
            <CardFull refusing />
            <main id="main" tabindex="-1" node_ref=content>
                {move || home.error.get().map(|e| view! { <p class="error">{e}</p> })}
                <Routes fallback=|| view! { <p>"Page not found."</p> }>
                    <Route path=path!("/") view=Dashboard />
                    <Route path=path!("/devices/:id") view=DevicePage />
                    <Route path=path!("/bridges") view=BridgesPage />
                    <Route path=path!("/automations") view=AutomationsPage />
                    <Route path=path!("/sharing") view=move || crate::pages::sharing(sharing_me.clone()) />
                    <Route path=path!("/people") view=move || crate::pages::people(people_me.clone()) />
                    <Route path=path!("/invite") view=Dashboard />
                </Routes>
            </main>
            <ConfirmDialog confirm />
        </Router>
    }
}

/// How long the page waits, with the live stream down, before saying the hub is away: a
/// stream that reconnects at once (the hub restarting its listener) is no news.
const AWAY_AFTER_MS: i64 = 2_000;
/// How long a live stream may say nothing before the page stops trusting it: the hub says
/// `tick` every 10 s when it has nothing else to say.
const SILENT_AFTER_MS: i64 = 25_000;

/// Says so, above every page, when the hub cannot be reached: the values below are then
/// from when it was last heard, and the page says when that was.
#[component]
fn HubAway(home: Home) -> impl IntoView {
    let away = move || home.down_since.get().is_some_and(|since| home.tick.get() - since >= AWAY_AFTER_MS);
    view! {
        <div class="away-slot" role="status">
            <Show when=away>
                <p class="away" id="hub-away">
                    <strong>"Your hub can't be reached."</strong>
                    " The values shown are from " {move || crate::time::local(home.heard.get())}
                    "; they update again as soon as it is back."
                </p>
            </Show>
        </div>
    }
}

/// How often the page asks whether the hub takes readings.
const STORAGE_EVERY_MS: i32 = 60_000;

/// Asks the hub now and every minute whether it refuses readings.
fn watch_storage(refusing: RwSignal<Option<hearth_model::account::Refusing>>) {
    let ask = move || {
        spawn_local(async move {
            if let Ok(storage) = api::storage().await {
                refusing.set(storage.refusing);
            }
        })
    };
    ask();
    let every = Closure::<dyn FnMut()>::new(ask);
    if let Some(window) = web_sys::window() {
        let _ = window
            .set_interval_with_callback_and_timeout_and_arguments_0(every.as_ref().unchecked_ref(), STORAGE_EVERY_MS);
    }
    every.forget();
}

/// Says so, above every page, while the hub refuses readings because its storage is full.
#[component]
fn CardFull(refusing: RwSignal<Option<hearth_model::account::Refusing>>) -> impl IntoView {
    view! {
        <div class="away-slot" role="status">
            {move || refusing.get().map(|r| view! {
                <p class="away" id="card-full">
                    <strong>"Your hub's storage is full: new readings are refused."</strong>
                    " Since " {crate::time::local(r.since)}
                    {(r.refused > 0).then(|| format!(", {} refused", r.refused))}
                    " (" {r.reason} "). "
                    "Devices keep what was not acknowledged and send it again once there is room. "
                    "Free some space, or move the data directory to a USB SSD."
                </p>
            })}
        </div>
    }
}

/// Subscribes to the hub's Server-Sent Events. The browser reconnects by itself; after a
/// reconnect the list is fetched again, since readings may have been missed. A stream that
/// has gone silent (no tick for 25 s) is closed and opened again: a connection to a hub
/// that lost power is never closed by anyone.
fn connect_live(home: Home) {
    let current = StoredValue::new_local(None::<web_sys::EventSource>);
    open_live(home, current);
    // Every 5 s: a stream gone silent is opened again, and so is one the browser gave up on
    // (an answer other than the stream, say a 500); the banner stays up meanwhile.
    let watchdog = Closure::<dyn FnMut()>::new(move || {
        let now = crate::time::now_ms();
        let silent = now - home.heard.get_untracked() > SILENT_AFTER_MS;
        let closed = current.get_value().is_none_or(|s| s.ready_state() == web_sys::EventSource::CLOSED);
        if (silent && home.live.get_untracked()) || closed {
            home.live.set(false);
            if home.down_since.get_untracked().is_none() {
                home.down_since.set(Some(now));
            }
            open_live(home, current);
        }
    });
    if let Some(window) = web_sys::window() {
        let _ = window.set_interval_with_callback_and_timeout_and_arguments_0(watchdog.as_ref().unchecked_ref(), 5_000);
    }
    watchdog.forget();
    // Leaving the page closes the stream: a page kept for the back button must not hold one
    // of the browser's few connections to the hub (six per host), or the next page's
    // requests wait behind it.
    let on_pagehide = Closure::<dyn FnMut()>::new(move || {
        if let Some(source) = current.get_value() {
            source.close();
        }
    });
    // Back to a page the browser kept: it reopens the stream and fetches what it missed.
    let on_pageshow =
        Closure::<dyn FnMut(web_sys::PageTransitionEvent)>::new(move |e: web_sys::PageTransitionEvent| {
            if e.persisted() {
                home.live.set(false);
                open_live(home, current);
            }
        });
    if let Some(window) = web_sys::window() {
        let _ = window.add_event_listener_with_callback("pagehide", on_pagehide.as_ref().unchecked_ref());
        let _ = window.add_event_listener_with_callback("pageshow", on_pageshow.as_ref().unchecked_ref());
    }
    on_pagehide.forget();
    on_pageshow.forget();
}

/// Opens the live stream, closing the one before if any.
fn open_live(home: Home, current: StoredValue<Option<web_sys::EventSource>, LocalStorage>) {
    if let Some(old) = current.get_value() {
        old.close();
    }
    let Ok(source) = web_sys::EventSource::new("/api/live") else {
        home.error.set(Some("live updates are not available in this browser".into()));
        return;
    };
    current.set_value(Some(source.clone()));
    let heard = move || home.heard.set(crate::time::now_ms());
    let on_readings = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
        heard();
        if let Some(text) = event.data().as_string()
            && let Ok(batch) = api::parse::<Vec<Reading>>(&text)
        {
            home.apply(batch);
        }
    });
    let on_tick = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |_| heard());
    let on_lagged = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |_| {
        heard();
        home.reload()
    });
    // A device's message was refused: the list says why.
    let on_rejected = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |_| {
        heard();
        home.reload()
    });
    let on_open = Closure::<dyn FnMut()>::new(move || {
        heard();
        home.down_since.set(None);
        if home.live.get_untracked() {
            return;
        }
        home.live.set(true);
        home.reload();
    });
    let closing = source.clone();
    let on_error = Closure::<dyn FnMut()>::new(move || {
        home.live.set(false);
        if home.down_since.get_untracked().is_none() {
            home.down_since.set(Some(crate::time::now_ms()));
        }
        // The browser gives up on a stream answered with an error: a session that expired
        // (401) goes back to the login page; anything else the watchdog retries.
        if closing.ready_state() == web_sys::EventSource::CLOSED {
            spawn_local(async move {
                if let Err(ApiError::Unauthorized) = api::me().await {
                    reload_page();
                }
            });
        }
    });
    let _ = source.add_event_listener_with_callback("readings", on_readings.as_ref().unchecked_ref());
    let _ = source.add_event_listener_with_callback("tick", on_tick.as_ref().unchecked_ref());
    let _ = source.add_event_listener_with_callback("lagged", on_lagged.as_ref().unchecked_ref());
    let _ = source.add_event_listener_with_callback("rejected", on_rejected.as_ref().unchecked_ref());
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    // The stream lives as long as the page: logging out reloads the page.
    on_readings.forget();
    on_tick.forget();
    on_lagged.forget();
    on_rejected.forget();
    on_open.forget();
    on_error.forget();
}
