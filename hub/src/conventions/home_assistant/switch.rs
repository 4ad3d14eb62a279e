//! `switch`: on or off, set on its command topic in its own words, reported on its state
//! topic if it has one.

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let state = config.main_state(false)?;
    let command = config.required_command()?;
    Ok(vec![ValueSpec { state, on_off: config.on_off()?, command: Some(command), ..config.value(None) }])
}

#[cfg(test)]
mod tests {
    use super::super::tests::announced;
    use crate::conventions::Message;
    use crate::reading::Value;

    #[test]
    fn a_switch_reads_its_endpoint_and_is_set_on_its_topic() {
        let switch = announced("z2m-ha-switch-left.config");
        let value = &switch.values[0];
        assert_eq!(value.command.as_ref().map(|c| c.topic.as_str()), Some("zigbee2mqtt/wall_switch_double/left/set"));
        let said = value.read_state(&Message::new("", br#"{"state_left":"ON","state_right":"OFF"}"#));
        assert_eq!(said, Some(Value::Bool(true)));
    }
}
