//! Automations that run on the hub alone: the rule model, a pure engine that decides, and
//! a runtime that carries out its decisions. Nothing here needs the internet; cloud-bound
//! actions only put a message in the outbox.

mod actions;
pub(crate) mod coap;
pub mod dryrun;
pub mod engine;
pub mod model;
mod persist;
pub mod run;
pub mod runtime;
pub mod scheduler;
pub mod upgrade;

pub use actions::{ActionError, Commands};
pub use model::Rule;
pub use run::Trace;
pub use runtime::{AutomationContext, Automations};
