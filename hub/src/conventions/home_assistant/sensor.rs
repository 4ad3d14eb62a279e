//! `sensor`: a value it reports on its state topic, with its unit; an enum sensor lists
//! the words it may say.

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let state = config.main_state(true)?;
    Ok(vec![ValueSpec { state, unit: config.unit()?, options: config.list("options"), ..config.value(None) }])
}

#[cfg(test)]
mod tests {
    use super::super::tests::values_of;

    #[test]
    fn a_sensor_reports_its_value_with_unit_class_and_state_class() {
        let sensor = values_of(
            "sensor",
            r#"{"name":"Brew Strength","stat_t":"c/strength","unit_of_meas":"%","dev_cla":"power_factor",
                "stat_cla":"measurement","sug_dsp_prc":0}"#,
        );
        let value = &sensor[0];
        assert_eq!(value.metric, "thing");
        assert_eq!(value.name.as_deref(), Some("Brew Strength"));
        assert_eq!(value.unit.as_deref(), Some("%"));
        assert_eq!(value.state_class.as_deref(), Some("measurement"));
        assert_eq!(value.precision, Some(0));
        assert!(value.command.is_none());
    }
}
