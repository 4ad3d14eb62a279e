//! `lock`: its state as text, and LOCK/UNLOCK (and OPEN, if it opens) as a choice. A lock's
//! commands are never sent retained: its OPEN would unlatch the door again at every wake.

use super::{Config, DiscoveryError};
use crate::conventions::ValueSpec;

pub(super) fn values(config: &mut Config<'_>) -> Result<Vec<ValueSpec>, DiscoveryError> {
    let state = config.main_state(false)?;
    let mut command = config.command("command_topic")?;
    if let Some(command) = command.as_mut() {
        command.retain = false;
    }
    let mut options = vec![
        config.text("payload_lock")?.unwrap_or_else(|| "LOCK".into()),
        config.text("payload_unlock")?.unwrap_or_else(|| "UNLOCK".into()),
    ];
    options.extend(config.text("payload_open")?);
    Ok(vec![ValueSpec { state, command, options, ..config.value(None) }])
}

#[cfg(test)]
mod tests {
    use super::super::tests::values_of;

    #[test]
    fn a_lock_takes_its_words_and_is_never_retained() {
        let lock = values_of("lock", r#"{"stat_t":"n/lock","cmd_t":"n/lock/set","pl_open":"OPEN","ret":true}"#);
        assert!(lock[0].command.as_ref().is_some_and(|c| !c.retain), "a lock's OPEN must never be retained");
        assert_eq!(
            (lock[0].metric.as_str(), lock[0].options.as_slice()),
            ("thing", &["LOCK", "UNLOCK", "OPEN"].map(String::from)[..])
        );
        assert!(lock[0].on_off.is_none());
    }
}
