//! `fan`: on or off, its speed in % and its preset mode, each with its own topics.

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let state = config.main_state(false)?;
    let command = config.required_command()?;
    let mut values = vec![ValueSpec { state, on_off: config.on_off()?, command: Some(command), ..config.value(None) }];
    let percentage = ("percentage_state_topic", "percentage_value_template");
    let percentage = config.part("percentage", percentage, "percentage_command_topic")?;
    values.extend(percentage.map(|p| ValueSpec { unit: Some("%".into()), ..p }));
    let preset = ("preset_mode_state_topic", "preset_mode_value_template");
    let preset = config.part("preset", preset, "preset_mode_command_topic")?;
    values.extend(preset.map(|p| ValueSpec { options: config.list("preset_modes"), ..p }));
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::super::tests::values_of;

    #[test]
    fn a_fan_has_its_speed_and_presets() {
        let fan = values_of(
            "fan",
            r#"{"name":"Fan","stat_t":"n/fan","cmd_t":"n/fan/set","pct_cmd_t":"n/fan/pct","pct_stat_t":"n/fan/pct/state",
                "pr_mode_cmd_t":"n/fan/preset","pr_modes":["eco","boost"]}"#,
        );
        let metrics: Vec<&str> = fan.iter().map(|v| v.metric.as_str()).collect();
        assert_eq!(metrics, ["thing", "thing_percentage", "thing_preset"]);
        assert!(fan[0].on_off.is_some());
        assert_eq!(fan[1].unit.as_deref(), Some("%"));
        assert_eq!(fan[1].name.as_deref(), Some("Fan percentage"));
        assert_eq!(fan[2].options, ["eco", "boost"]);
    }
}
