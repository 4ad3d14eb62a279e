//! An icon for a value, by its Home Assistant device class and, for a binary value, its
//! state: Material Design Icons from the `icondata_mdi` package, drawn as inline SVG.

use icondata_mdi as mdi;
use leptos::prelude::*;

type Data = &'static icondata_core::IconData;

/// The icon for a value of `class` (`on` for a binary value's state).
pub fn for_class(class: Option<&str>, on: Option<bool>) -> Data {
    let pick = |yes: Data, no: Data| if on == Some(false) { no } else { yes };
    match class.unwrap_or_default() {
        "temperature" => mdi::MdiThermometer,
        "humidity" | "moisture" if on.is_none() => mdi::MdiWaterPercent,
        "moisture" => pick(mdi::MdiWater, mdi::MdiWaterOff),
        "battery" if on.is_some() => pick(mdi::MdiBatteryAlert, mdi::MdiBattery),
        "battery" => mdi::MdiBattery,
        "power" if on.is_some() => pick(mdi::MdiPowerPlug, mdi::MdiPowerPlugOff),
        "power" => mdi::MdiFlash,
        "energy" => mdi::MdiLightningBolt,
        "voltage" => mdi::MdiSineWave,
        "current" => mdi::MdiCurrentAc,
        "illuminance" => mdi::MdiBrightness5,
        "atmospheric_pressure" | "pressure" => mdi::MdiThermometerLines,
        "carbon_dioxide" => mdi::MdiMoleculeCo2,
        "signal_strength" => mdi::MdiWifi,
        "door" => pick(mdi::MdiDoorOpen, mdi::MdiDoorClosed),
        "window" | "opening" => pick(mdi::MdiWindowOpen, mdi::MdiWindowClosed),
        "garage_door" => pick(mdi::MdiGarageOpen, mdi::MdiGarage),
        "motion" => pick(mdi::MdiMotionSensor, mdi::MdiMotionSensorOff),
        "occupancy" | "presence" => pick(mdi::MdiHome, mdi::MdiHomeOutline),
        "lock" => pick(mdi::MdiLockOpen, mdi::MdiLock),
        "smoke" | "gas" | "carbon_monoxide" => pick(mdi::MdiSmokeDetectorAlert, mdi::MdiSmokeDetector),
        "connectivity" => pick(mdi::MdiCheckNetworkOutline, mdi::MdiCloseNetworkOutline),
        "plug" | "outlet" | "switch" => pick(mdi::MdiPowerPlug, mdi::MdiPowerPlugOff),
        "light" => pick(mdi::MdiLightbulb, mdi::MdiLightbulbOutline),
        "problem" | "safety" | "tamper" => pick(mdi::MdiAlertCircle, mdi::MdiCheckCircle),
        _ if on.is_some() => pick(mdi::MdiCheckboxMarkedCircle, mdi::MdiRadioboxBlank),
        _ => mdi::MdiGauge,
    }
}

/// An icon, decorative: its value's name says what it is.
#[component]
pub fn Icon(
    /// What to draw.
    icon: Data,
) -> impl IntoView {
    view! {
        <svg class="icon" viewBox=icon.view_box.unwrap_or("0 0 24 24") width="1.1em" height="1.1em"
            fill="currentColor" aria-hidden="true" focusable="false" inner_html=icon.data></svg>
    }
}
