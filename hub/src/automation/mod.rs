//! Automations that run on the hub alone: the rule model, a pure engine that decides, and
//! a runtime that carries out its decisions. Nothing here needs the internet; cloud-bound
//! actions only put a message in the outbox.

mod coap;
pub mod dryrun;
pub mod engine;
pub mod model;
pub mod runtime;

pub use model::Rule;
pub use runtime::{AutomationContext, Automations, Commands, Trace};
