//! `valve`: one that reports its position takes a position (0-100); one that does not, the
//! words to open and close it (and stop it, only if its config says how).

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let state = config.main_state(false)?;
    let command = config.command("command_topic")?;
    if config.flag("reports_position")? {
        return Ok(vec![ValueSpec { state, command, unit: Some("%".into()), ..config.value(None) }]);
    }
    let options = [
        config.text("payload_open")?.unwrap_or_else(|| "OPEN".into()),
        config.text("payload_close")?.unwrap_or_else(|| "CLOSE".into()),
        config.text("payload_stop")?.unwrap_or_default(),
    ]
    .into_iter()
    .filter(|w| !w.is_empty())
    .collect();
    Ok(vec![ValueSpec { state, command, options, ..config.value(None) }])
}

#[cfg(test)]
mod tests {
    use super::super::tests::values_of;

    #[test]
    fn a_valve_takes_words_or_a_position() {
        let valve = values_of("valve", r#"{"stat_t":"n/valve","cmd_t":"n/valve/set"}"#);
        assert_eq!(valve[0].options, ["OPEN", "CLOSE"], "a valve stops only if its config says how");
        let positioned = values_of("valve", r#"{"stat_t":"n/valve","cmd_t":"n/valve/set","pos":true}"#);
        assert_eq!((positioned[0].unit.as_deref(), positioned[0].options.len()), (Some("%"), 0));
    }
}
