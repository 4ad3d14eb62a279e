//! Hearth's web UI: mounts the app. Everything else lives in the modules below.

mod api;
mod app;
mod components;
mod pages;
mod time;

fn main() {
    leptos::mount::mount_to_body(app::App);
}
