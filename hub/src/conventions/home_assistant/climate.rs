//! `climate`: the temperature it measures, its target (set on its own topic) and its mode,
//! each a value of its own (`<object>_current`, `_target`, `_mode`), in the unit its config
//! gives (`temperature_unit`, C or F).

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let unit = match config.text("temperature_unit")?.as_deref() {
        Some("C" | "c" | "°C") => Some("°C".to_owned()),
        Some("F" | "f" | "°F") => Some("°F".to_owned()),
        _ => config.unit()?,
    };
    let current = config.state("current_temperature_topic", "current_temperature_template", false)?;
    let target = config.state("temperature_state_topic", "temperature_state_template", false)?;
    let target_command = config.command("temperature_command_topic")?;
    let mode = config.state("mode_state_topic", "mode_state_template", false)?;
    let mode_command = config.command("mode_command_topic")?;
    let modes = match config.list("modes") {
        modes if modes.is_empty() => ["auto", "off", "cool", "heat", "dry", "fan_only"].map(String::from).to_vec(),
        modes => modes,
    };
    let temperature = |value: ValueSpec| ValueSpec { class: Some("temperature".into()), ..value };
    Ok(vec![
        temperature(ValueSpec { state: current, unit: unit.clone(), ..config.value(Some("current")) }),
        temperature(ValueSpec { state: target, command: target_command, unit, ..config.value(Some("target")) }),
        ValueSpec { state: mode, command: mode_command, options: modes, ..config.value(Some("mode")) },
    ])
}

#[cfg(test)]
mod tests {
    use super::super::tests::announced;

    #[test]
    fn a_thermostat_has_its_temperatures_in_its_unit_and_its_modes() {
        let trv = announced("z2m-ha-climate-trv.config");
        let metric = |suffix: &str| {
            trv.values.iter().find(|v| v.metric.ends_with(suffix)).unwrap_or_else(|| panic!("no {suffix}"))
        };
        assert_eq!(metric("_mode").options, ["heat", "auto", "off"]);
        assert_eq!(metric("_current").unit.as_deref(), Some("°C"), "temperature_unit C");
        let target = metric("_target");
        assert_eq!(target.unit.as_deref(), Some("°C"));
        assert!(target.command.as_ref().is_some_and(|c| c.topic.ends_with("current_heating_setpoint")));
        // Its action template ({% set %}) is outside the subset; the rest is kept.
        assert_eq!(metric("_current").state.as_ref().map(|s| s.topic.as_str()), Some("zigbee2mqtt/TS0601_thermostat"));
    }

    #[test]
    fn fahrenheit_is_kept() {
        let values = super::super::tests::values_of(
            "climate",
            r#"{"curr_temp_t":"n/t","temp_stat_t":"n/target","temp_cmd_t":"n/target/set","temp_unit":"F"}"#,
        );
        assert!(values.iter().filter(|v| v.metric != "thing_mode").all(|v| v.unit.as_deref() == Some("°F")));
    }
}
