//! Hearth's web UI: mounts the app. Everything else lives in the modules below.
//!
//! Built as two wasms, each without the other's pages (`pages`): what only the other
//! build's pages use is dead in each, and checked once, in the build with both.
#![cfg_attr(not(all(feature = "home", feature = "manage")), allow(dead_code))]

mod api;
mod app;
mod components;
mod pages;
mod time;

fn main() {
    // Before any routing changes it: the path the hub chose this build for.
    app::first_path();
    leptos::mount::mount_to_body(app::App);
}
