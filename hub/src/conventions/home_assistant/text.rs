//! `text`: text it takes on its command topic, reported on its state topic if it has one.

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let state = config.main_state(false)?;
    let command = config.required_command()?;
    Ok(vec![ValueSpec { state, command: Some(command), ..config.value(None) }])
}

#[cfg(test)]
mod tests {
    use super::super::tests::values_of;

    #[test]
    fn a_text_takes_text() {
        let text = values_of("text", r#"{"stat_t":"n/text","cmd_t":"n/text/set"}"#);
        assert!(text[0].command.is_some());
    }
}
