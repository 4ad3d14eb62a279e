//! `number`: a value it takes on its command topic (a brightness, a duration), with its
//! unit, reported on its state topic if it has one.

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let state = config.main_state(false)?;
    let command = config.required_command()?;
    Ok(vec![ValueSpec { state, command: Some(command), unit: config.unit()?, ..config.value(None) }])
}
