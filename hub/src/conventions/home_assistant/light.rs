//! `light`: on or off and its brightness, in the basic schema (a topic per part, payloads
//! in its own words) or the JSON schema (`{"state":"ON","brightness":128}` both ways).

use super::template::Template;
use super::{Config, DiscoveryError};
use crate::conventions::description::words;
use crate::conventions::{CommandSpec, Form, StateSpec, ValueSpec};

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let command = config.required_command()?;
    if config.text("schema")?.is_some_and(|s| s.eq_ignore_ascii_case("json")) {
        return json(config, command);
    }
    let state = config.state("state_topic", "state_value_template", false)?;
    let mut values = vec![ValueSpec { state, on_off: config.on_off()?, command: Some(command), ..config.value(None) }];
    let brightness = ("brightness_state_topic", "brightness_value_template");
    values.extend(config.part("brightness", brightness, "brightness_command_topic")?);
    Ok(values)
}

/// The JSON schema: one state topic and one command topic, a key each part.
fn json(config: &mut Config<'_>, command: CommandSpec) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let topic = config.topic("state_topic")?;
    let state = |key: &str| {
        let template = Template::parse(&format!("{{{{ value_json.{key} }}}}")).ok();
        topic.clone().map(|topic| StateSpec { topic, template })
    };
    let set = |key: &str| CommandSpec { form: Form::Json { key: key.into() }, ..command.clone() };
    let mut values = vec![ValueSpec {
        state: state("state"),
        on_off: words("ON", "OFF"),
        command: Some(set("state")),
        ..config.value(None)
    }];
    let modes = config.list("supported_color_modes");
    if config.flag("brightness")? || modes.iter().any(|m| m != "onoff") {
        values.push(ValueSpec {
            state: state("brightness"),
            command: Some(set("brightness")),
            ..config.value(Some("brightness"))
        });
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::super::tests::announced;
    use crate::conventions::{Form, Message};
    use crate::reading::Value;

    #[test]
    fn a_json_light_is_set_and_read_in_json() {
        let light = announced("z2m-ha-light-ikea-bulb.config");
        let metrics: Vec<&str> = light.values.iter().map(|v| v.metric.as_str()).collect();
        assert_eq!(metrics.len(), 2, "{metrics:?}");
        let brightness = &light.values[1];
        assert_eq!(brightness.command.as_ref().map(|c| &c.form), Some(&Form::Json { key: "brightness".into() }));
        let said = brightness.read_state(&Message::new("", br#"{"state":"ON","brightness":128}"#));
        assert_eq!(said, Some(Value::Number(128.0)));
        let only_brightness = announced("z2m-ha-light-brightness-only.config");
        assert_eq!(only_brightness.values.len(), 2);
    }
}
