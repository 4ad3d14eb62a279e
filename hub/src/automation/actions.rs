//! The actions a run hands to the world outside the scheduler: MQTT and CoAP commands to
//! devices, notifications in the app, messages for the cloud outbox. Each returns what
//! happened in words for the run's trace, or an error that keeps its cause.

use serde_json::json;

use hearth_model::automations::{Note, NotificationSource};
use hearth_model::devices::Delivery;

use super::coap::CoapError;
use super::model::{Action, CoapTarget, RuleError, parse_coap_address_or};
use super::scheduler::Job;
use crate::consent::Subject;
use crate::ingest::mqtt::{MqttServer, Outgoing};
use crate::ingest::retained::Retained;
use crate::outbox::{Outbox, OutboxError};
use crate::store::{Store, StoreError};
use rumqttc::QoS;

/// Where MQTT commands to devices go.
#[derive(Clone)]
pub enum Commands {
    /// The embedded server: to the device's subscriptions.
    Embedded(MqttServer),
    /// The external broker the hub is connected to, and the commands the hub sent there
    /// retained (to clear them when their subject is shredded or their device removed).
    External { client: rumqttc::AsyncClient, retained: Retained },
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
    #[error("refused: {0:?} is inside another bridge's namespaces on the broker")]
    OthersNamespace(String),
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
    ) -> Result<(String, Delivery), ActionError> {
        let out = match bridges.command(device, metric, value) {
            Some(command) => {
                let command = command?;
                Outgoing {
                    to: command.bridge,
                    target: device.to_owned(),
                    topic: command.topic,
                    payload: command.payload.into(),
                    subject,
                    retain: command.retain,
                }
            }
            None => {
                let (topic, payload) = crate::conventions::hearth::command(device, metric, value);
                Outgoing {
                    to: device.to_owned(),
                    target: device.to_owned(),
                    topic,
                    payload: payload.into(),
                    subject,
                    retain: false,
                }
            }
        };
        // On a broker the hub does not run, a topic inside another connection's namespace
        // reaches that connection's devices: a command goes only where its own may be read.
        if let Commands::External { .. } = self
            && bridges.bridge_for(&out.topic).is_some_and(|owner| owner != out.to)
        {
            return Err(ActionError::OthersNamespace(out.topic));
        }
        let topic = out.topic.clone();
        let sent = self.send(out).await?;
        Ok((topic, sent))
    }

    /// Publishes a command: on `hearth/<device>/set/<metric>`, or for a device behind a
    /// bridge on the bridge's own topic, to the bridge alone.
    async fn send(&self, out: Outgoing) -> Result<Delivery, ActionError> {
        match self {
            Commands::Embedded(server) => Ok(server.send(out).await),
            Commands::External { client, retained } => {
                // The broker keeps it; the hub notes it was sent, to clear it there when its
                // subject's data is shredded or its device removed. A command on a topic that
                // is not to be retained clears the one retained before (with an empty
                // retained message, which the broker also passes on).
                if !out.retain && retained.clear(&out.to, &out.topic).await? {
                    client.publish(out.topic.clone(), QoS::AtLeastOnce, true, Vec::new()).await?;
                }
                let kept = match out.retain {
                    true => retained.keep((&out.to, &out.target), &out.topic, out.payload.clone(), out.subject).await?,
                    false => None,
                };
                // Not kept (its device removed, its subject shredded meanwhile): not retained.
                let retain = kept.is_some();
                client.publish(out.topic.clone(), QoS::AtLeastOnce, retain, out.payload.to_vec()).await?;
                // Forgotten while it was being sent: the clearing may have gone out first.
                if let Some(seq) = kept
                    && !retained.holds(seq)
                {
                    client.publish(out.topic, QoS::AtLeastOnce, true, Vec::new()).await?;
                }
                Ok(Delivery::Sent)
            }
            Commands::Off => Err(ActionError::MqttOff),
        }
    }

    /// Forgets a shredded tenancy's queued and retained commands (the store deleted them),
    /// and those for its own devices (`own`); on an external broker they are cleared there.
    pub async fn forget_tenancy(&self, tenancy: i64, own: &[String]) {
        match self {
            Commands::Embedded(server) => server.forget_tenancy(tenancy, own).await,
            Commands::External { client, retained } => {
                let forgotten = retained.forget_tenancy(tenancy, own).await;
                crate::ingest::retained::clear_on_broker_now(client, forgotten);
            }
            Commands::Off => {}
        }
    }

    /// Forgets removed devices' queued and retained commands and sessions (the store
    /// deleted them); on an external broker the retained ones are cleared there.
    pub async fn forget_devices(&self, devices: &[String]) {
        match self {
            Commands::Embedded(server) => server.forget_devices(devices).await,
            Commands::External { client, retained } => {
                let forgotten = retained.forget_devices(devices).await;
                crate::ingest::retained::clear_on_broker_now(client, forgotten);
            }
            Commands::Off => {}
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
                let (topic, delivery) =
                    self.commands.command(&self.bridges, device, metric, value, job.subject).await?;
                let sent = match delivery {
                    Delivery::Sent => "sent to the broker",
                    Delivery::Delivered => "sent",
                    Delivery::Queued => "queued until the device wakes",
                    Delivery::Unheard => "sent, but nothing of the device is connected to hear it",
                };
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
