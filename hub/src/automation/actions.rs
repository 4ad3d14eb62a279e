//! The actions a run hands to the world outside the scheduler: MQTT and CoAP commands to
//! devices, notifications in the app, messages for the cloud outbox. Each returns what
//! happened in words for the run's trace, or an error that keeps its cause.

use serde_json::json;

use hearth_model::automations::{Note, NotificationSource};

use super::coap::CoapError;
use super::model::{Action, CoapTarget, RuleError, command_payload, parse_coap_address_or};
use super::scheduler::Job;
use crate::consent::Subject;
use crate::ingest::mqtt::MqttServer;
use crate::outbox::{Outbox, OutboxError};
use crate::store::{Store, StoreError};

/// Where MQTT commands to devices go.
#[derive(Clone)]
pub enum Commands {
    /// The embedded server: to the device's subscriptions.
    Embedded(MqttServer),
    /// The external broker the hub is connected to.
    External(rumqttc::AsyncClient),
    /// No MQTT.
    Off,
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("MQTT is off")]
    MqttOff,
    #[error(transparent)]
    Broker(#[from] rumqttc::ClientError),
    #[error(transparent)]
    Uri(#[from] RuleError),
    #[error(transparent)]
    Coap(#[from] CoapError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("the scheduler carries out {0} itself")]
    NotMine(&'static str),
    #[error("refused: the rule's author may not act in the home now (their tenancy is not running)")]
    OutOfTenancy,
    #[error("refused: the rule's author may not command {0:?} now (a building device, or not theirs)")]
    NotYourDevice(String),
    #[error("{0:?} has no CoAP address (the owner sets it on the device's page)")]
    NoCoapAddress(String),
    #[error(transparent)]
    Bridged(#[from] crate::bridges::CommandError),
}

impl Commands {
    /// Sends `value` for `metric` to `device`: on `hearth/<device>/set/<metric>`, or, for a
    /// device behind a bridge, in its bridge's convention to that bridge alone. Whether
    /// `subject` may command it is the caller's to check. Returns the topic and how it went.
    pub async fn command(
        &self,
        bridges: &crate::bridges::Bridges,
        device: &str,
        metric: &str,
        value: &hearth_model::Value,
        subject: Subject,
    ) -> Result<(String, &'static str), ActionError> {
        if let Some(command) = bridges.command(device, metric, value) {
            let command = command?;
            let sent = self.send(Some(&command.bridge), &command.topic, command.payload, subject).await?;
            return Ok((command.topic, sent));
        }
        let topic = format!("hearth/{device}/set/{metric}");
        let sent = self.send(None, &topic, command_payload(value), subject).await?;
        Ok((topic, sent))
    }

    /// Publishes a command: on `hearth/<device>/set/<metric>`, or for a device behind a
    /// bridge on the bridge's own topic (`bridge` then names it: only its sessions hear it).
    /// `subject` is whose rule sent it: what is queued for a device that is away goes
    /// when that subject's data is shredded.
    async fn send(
        &self,
        bridge: Option<&str>,
        topic: &str,
        payload: Vec<u8>,
        subject: Subject,
    ) -> Result<&'static str, ActionError> {
        match self {
            Commands::Embedded(server) => {
                match bridge {
                    Some(bridge) => server.publish_to(bridge, topic, payload, subject).await,
                    None => server.publish(topic, payload, subject).await,
                }
                Ok("sent")
            }
            Commands::External(client) => {
                client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await?;
                Ok("sent to the broker")
            }
            Commands::Off => Err(ActionError::MqttOff),
        }
    }
}

/// What actions need from the rest of the hub.
#[derive(Clone)]
pub struct Effects {
    pub store: Store,
    pub commands: Commands,
    pub bridges: crate::bridges::Bridges,
    pub outbox: Outbox,
}

impl Effects {
    /// The device, too, is checked at every command: its class may have changed since the
    /// rule was saved.
    fn may_command(&self, job: &Job, device: &str, now: i64) -> Result<(), ActionError> {
        if self.store.ownership().rule.may_command(job.subject, device, now) {
            Ok(())
        } else {
            Err(ActionError::NotYourDevice(device.to_owned()))
        }
    }

    /// Carries out `job`'s action at `now`.
    pub async fn perform(&self, job: &Job, now: i64) -> Result<String, ActionError> {
        // Checked at every action, not only when the rule was saved: a tenancy ends while
        // its rules are loaded.
        if !self.store.ownership().rule.acts_at(job.subject, now) {
            return Err(ActionError::OutOfTenancy);
        }
        match &job.action {
            Action::Mqtt { device, metric, value } => {
                self.may_command(job, device, now)?;
                let (topic, sent) = self.commands.command(&self.bridges, device, metric, value, job.subject).await?;
                Ok(match topic.starts_with("hearth/") {
                    true => sent.to_owned(),
                    false => format!("{sent} on {topic}"),
                })
            }
            Action::Coap { device, path, method, payload } => {
                self.may_command(job, device, now)?;
                // The address as the owner set it now, not as it was when the rule was saved.
                let record = self.store.device(device).await?;
                let plaintext = record.as_ref().is_some_and(|d| d.plaintext);
                let address = record.and_then(|d| d.coap_address);
                let address = address.ok_or_else(|| ActionError::NoCoapAddress(device.clone()))?;
                // Over DTLS with the device's own key, unless it is marked as unable to do it.
                let (security, default_port) = match plaintext {
                    true => (super::coap::Security::Plain, 5683),
                    false => {
                        let key = self.store.device_secret(device).await?;
                        let key = key.ok_or_else(|| ActionError::NoCoapAddress(device.clone()))?;
                        (super::coap::Security::Psk { identity: device.clone(), key }, 5684)
                    }
                };
                let target = CoapTarget { addr: parse_coap_address_or(&address, default_port)?, path: path.clone() };
                Ok(super::coap::request(&target, *method, payload.as_bytes(), security).await?)
            }
            Action::Notify { message } => {
                let note = Note {
                    source: NotificationSource::Rule,
                    message: message.clone(),
                    rule: Some(job.rule_name.clone()),
                    trigger: Some(job.trigger.text.clone()),
                };
                self.store.add_notification(job.author, &note, now).await?;
                Ok("shown in the app".into())
            }
            Action::Cloud { destination, topic, payload } => {
                let message = json!({ "rule": job.rule_name, "trigger": job.trigger, "payload": payload });
                let id = self.outbox.send(job.subject, destination, topic.as_deref(), message).await?;
                Ok(format!("queued as {id}"))
            }
            Action::Delay { .. } => Err(ActionError::NotMine("delays")),
            Action::Set { .. } => Err(ActionError::NotMine("virtual values")),
        }
    }
}
