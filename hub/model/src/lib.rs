//! The contract between Hearth's hub and its web UI: a request and an answer type for each
//! route, the error body, the domain's names for things (roles, subjects, classes,
//! statuses) and the rule model. Types and serde only: no I/O, no clock, nothing that needs
//! the hub's libraries, so that the UI compiles against exactly what the hub sends. Checks
//! that need more (time of day, cron, what the store holds) stay in the hub.

#[macro_use]
mod names;

pub mod account;
pub mod automations;
pub mod consent;
pub mod devices;
pub mod error;
pub mod pages;
pub mod people;
pub mod present;
pub mod rules;
pub mod runs;
pub mod series;
pub mod value;

pub use account::Me;
pub use devices::Reading;
pub use error::ErrorBody;
pub use names::UnknownName;
pub use people::{DeviceClass, Granularity, Period, Role, Subject};
pub use rules::{Action, CoapMethod, Condition, Mode, Op, Rule, Trigger, Weekday};
pub use runs::{Cause, Check, RunStatus, Step, Trace};
pub use series::Bucket;
pub use value::Value;
