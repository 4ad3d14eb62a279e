//! `select`: one of its options, set on its command topic.

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let state = config.main_state(false)?;
    let command = config.required_command()?;
    let options = config.list("options");
    if options.is_empty() {
        return Err(DiscoveryError::Missing("options", "select"));
    }
    Ok(vec![ValueSpec { state, command: Some(command), options, ..config.value(None) }])
}
