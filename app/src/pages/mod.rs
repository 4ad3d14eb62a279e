//! One module per screen.

pub mod automations;
pub mod dashboard;
pub mod device;
pub mod invite;
pub mod login;
pub mod people;
pub mod setup;
pub mod sharing;
