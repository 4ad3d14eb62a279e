//! Rules saved before CoAP actions named devices sent their commands to an address of their
//! own (`"uri": "coap://192.0.2.7/light"`). At start, each such action is rewritten to name
//! the device the owner gave that address. An action whose address is no device's is taken
//! out of its rule, the rule is turned off, and its author is told why: nothing is sent to
//! an address the owner did not give a device, and no rule is lost without a word.

use std::collections::HashMap;

use hearth_model::automations::{Note, NotificationSource};
use serde_json::Value;

use super::model::parse_coap_address;
use crate::store::{Store, StoreError};

/// Rewrites every rule that still has address-based CoAP actions; returns how many rules
/// changed.
pub async fn coap_actions_name_devices(store: &Store, now: i64) -> Result<usize, StoreError> {
    let devices: HashMap<String, String> =
        store.devices().await?.into_iter().filter_map(|d| Some((d.coap_address?, d.id))).collect();
    let mut changed = 0;
    for row in store.rules().await? {
        let Ok(mut body) = serde_json::from_slice::<Value>(&row.body) else { continue };
        let Some(actions) = body.get_mut("actions").and_then(Value::as_array_mut) else { continue };
        let (mut orphans, mut legacy) = (Vec::new(), 0);
        actions.retain_mut(|action| {
            let Some(uri) = legacy_uri(action) else { return true };
            legacy += 1;
            match device_and_path(&uri, &devices) {
                Some((device, path)) => {
                    if let Some(fields) = action.as_object_mut() {
                        fields.remove("uri");
                        fields.insert("device".into(), device.into());
                        fields.insert("path".into(), path.into());
                    }
                    true
                }
                None => {
                    orphans.push(uri);
                    false
                }
            }
        });
        if legacy == 0 {
            continue;
        }
        let name = body.get("name").and_then(Value::as_str).unwrap_or("a rule").to_owned();
        let enabled = row.enabled && orphans.is_empty();
        if let Some(fields) = body.as_object_mut() {
            fields.insert("enabled".into(), enabled.into());
        }
        let bytes = serde_json::to_vec(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        store.update_rule(row.id, &bytes, enabled, now).await?;
        if !orphans.is_empty() {
            let message = format!(
                "\"{name}\" is turned off: its CoAP command to {} named an address, and CoAP commands now \
                 name a device. Give the device its CoAP address on its page, then add the command again.",
                orphans.join(", ")
            );
            let note = Note { source: NotificationSource::Hub, message, rule: Some(name.clone()), trigger: None };
            store.add_notification(row.author_id, &note, now).await?;
        }
        tracing::warn!(rule = row.id, dropped = orphans.len(), "address-based CoAP actions rewritten");
        changed += 1;
    }
    Ok(changed)
}

/// The `uri` of an old-style CoAP action.
fn legacy_uri(action: &Value) -> Option<String> {
    (action.get("type")? == "coap").then(|| action.get("uri")?.as_str().map(str::to_owned)).flatten()
}

/// The device whose CoAP address `uri` reaches, and the path on it.
fn device_and_path(uri: &str, devices: &HashMap<String, String>) -> Option<(String, String)> {
    let rest = uri.strip_prefix("coap://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = parse_coap_address(authority).ok()?;
    let device = devices.get(&addr.to_string())?;
    (!path.is_empty()).then(|| (device.clone(), path.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::automation::Rule;
    use crate::crypto::Key;

    #[tokio::test]
    async fn old_coap_actions_name_their_device_or_turn_their_rule_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Key::generate().unwrap(), 0).await.unwrap();
        let owner = store.create_first_owner("olga", "x", 0).await.unwrap().unwrap();
        assert!(store.create_device("lamp", "Lamp", "secret", 0).await.unwrap());
        assert!(store.set_device_coap("lamp", Some("192.0.2.7:5683")).await.unwrap());
        let rule = |name: &str, uri: &str| {
            json!({ "name": name, "triggers": [{ "type": "start" }], "actions": [
                { "type": "coap", "uri": uri, "method": "put", "payload": "on" },
                { "type": "notify", "message": "done" } ] })
        };
        let known = rule("Known", "coap://192.0.2.7/light/1");
        let unknown = rule("Unknown", "coap://10.0.0.1:5683/router");
        let known = store.create_rule(owner, &serde_json::to_vec(&known).unwrap(), true, 0).await.unwrap();
        let unknown = store.create_rule(owner, &serde_json::to_vec(&unknown).unwrap(), true, 0).await.unwrap();

        assert_eq!(coap_actions_name_devices(&store, 5).await.unwrap(), 2);
        let read = |id| {
            let store = store.clone();
            async move {
                let row = store.rule(id).await.unwrap().unwrap();
                (row.enabled, serde_json::from_slice::<Rule>(&row.body).expect("the rule reads as a rule now"))
            }
        };
        let (enabled, known) = read(known).await;
        assert!(enabled);
        assert_eq!(known.actions[0].describe(), "CoAP PUT lamp/light/1");
        let (enabled, unknown) = read(unknown).await;
        assert!(!enabled && !unknown.enabled);
        assert_eq!(unknown.actions.len(), 1, "the address-based action is gone: {:?}", unknown.actions);
        let notes = store.notifications(owner, 10).await.unwrap();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].2.message.contains("coap://10.0.0.1:5683/router"), "{}", notes[0].2.message);

        assert_eq!(coap_actions_name_devices(&store, 6).await.unwrap(), 0, "a second start changes nothing");
    }
}
