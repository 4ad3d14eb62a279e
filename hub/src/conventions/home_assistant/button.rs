//! `button`: a press, sent on its command topic. A press is an event, not a state: it is
//! never sent retained, or it would press again at every wake.

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;
use crate::conventions::description::words;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let mut command = config.required_command()?;
    command.retain = false;
    let press = config.text("payload_press")?.unwrap_or_else(|| "PRESS".into());
    Ok(vec![ValueSpec { on_off: words(&press, &press), command: Some(command), ..config.value(None) }])
}
