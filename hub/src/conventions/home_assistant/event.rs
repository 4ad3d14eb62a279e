//! `event`: what happened (a button's press or hold), in JSON with its type unless a
//! template says otherwise. It takes nothing.

use super::template::Template;
use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let mut state = config.main_state(true)?;
    if let Some(state) = state.as_mut().filter(|s| s.template.is_none()) {
        state.template = Template::parse("{{ value_json.event_type }}").ok();
    }
    Ok(vec![ValueSpec { state, options: config.list("event_types"), ..config.value(None) }])
}

#[cfg(test)]
mod tests {
    use super::super::tests::values_of;
    use crate::conventions::Message;
    use crate::reading::Value;

    #[test]
    fn an_event_reports_its_type() {
        let event = values_of("event", r#"{"stat_t":"n/button","evt_typ":["press","hold"]}"#);
        assert_eq!(event[0].options, ["press", "hold"]);
        let said = event[0].read_state(&Message::new("", br#"{"event_type":"hold"}"#));
        assert_eq!(said, Some(Value::Text("hold".into())));
        assert!(event[0].command.is_none());
    }
}
