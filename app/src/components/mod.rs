//! Pieces shared by several pages.

pub mod chart;
pub mod confirm;
pub mod controls;
pub mod credentials;
pub mod form;
pub mod icon;
pub mod load;
pub mod tokens;
