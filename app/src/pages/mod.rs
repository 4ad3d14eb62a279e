//! One module per screen.

pub mod dashboard;
pub mod device;
pub mod login;
pub mod setup;
