//! `cover`: open or closed in its own words, and its position (0-100) where it has one.

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;
use crate::conventions::description::words;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let state = config.main_state(false)?;
    let command = config.command("command_topic")?;
    let open = config.text("payload_open")?.unwrap_or_else(|| "OPEN".into());
    let close = config.text("payload_close")?.unwrap_or_else(|| "CLOSE".into());
    let mut values = vec![ValueSpec { state, on_off: words(&open, &close), command, ..config.value(None) }];
    let position = config.part("position", ("position_topic", "position_template"), "set_position_topic")?;
    values.extend(position.map(|p| ValueSpec { unit: Some("%".into()), ..p }));
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::super::tests::announced;

    #[test]
    fn a_cover_has_its_position() {
        let cover = announced("z2m-ha-cover.config");
        assert!(cover.values.iter().any(|v| v.metric.ends_with("_position") && v.command.is_some()));
    }
}
