//! End-to-end tests: each boots the real hub on loopback port 0 with a fresh data directory
//! and talks to it with real clients. Assertions go through the public API.

mod api;
mod asking;
mod authz;
mod automation;
mod bridges;
mod coap;
mod consent;
mod conventions;
mod disk;
mod frame;
mod freshness;
mod fuzz;
mod glance;
mod home;
mod hostile;
mod lifecycle;
mod mqtt;
mod ownership;
mod phone;
mod promise;
mod sessions;
mod store;
mod tls;
mod ui;
