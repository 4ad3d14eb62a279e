//! `binary_sensor`: on or off on its state topic, in its own words (`payload_on`,
//! `payload_off`).

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let state = config.main_state(true)?;
    Ok(vec![ValueSpec { state, on_off: config.on_off()?, ..config.value(None) }])
}

#[cfg(test)]
mod tests {
    use super::super::tests::{announced, values_of};
    use crate::conventions::Message;
    use crate::reading::Value;

    #[test]
    fn its_own_words_read_as_on_and_off() {
        // JSON true/false as payloads read as text.
        let restart = announced("z2m-ha-binary_sensor-bridge-restart_required.config");
        let value = &restart.values[0];
        assert_eq!(value.read_state(&Message::new("", br#"{"restart_required":true}"#)), Some(Value::Bool(true)));
        let door = values_of("binary_sensor", r#"{"stat_t":"d/s","pl_on":"open","pl_off":"closed","dev_cla":"door"}"#);
        assert_eq!(door[0].read_state(&Message::new("", b"closed")), Some(Value::Bool(false)));
        assert_eq!(door[0].class.as_deref(), Some("door"));
    }
}
