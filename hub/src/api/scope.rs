//! What a logged-in person may see: whose readings (the data keys of their data subject)
//! and which devices. Every data route goes through [`Scope::of`].

use std::collections::BTreeSet;

use crate::consent::Subject;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::{DeviceRecord, Role, Session};

/// The data subject a user acts for: the owner, or a tenant's tenancy.
pub fn subject_of(user: &Session) -> Option<Subject> {
    match user.role {
        Role::Owner => Some(Subject::Owner),
        Role::Tenant => user.tenancy_id.map(Subject::Tenancy),
        Role::Guest => None,
    }
}

/// Whose security log an event of `user`'s goes to: their own subject's, or for a guest,
/// their host's. `None` if that cannot be told (a guest whose host is gone, a failed
/// lookup): then the event is not written anywhere, rather than in someone else's log.
pub async fn audit_subject(state: &AppState, user: &Session) -> Option<Subject> {
    if let Some(subject) = subject_of(user) {
        return Some(subject);
    }
    let host = state.store.user_session(user.invited_by?).await.ok()??;
    subject_of(&host)
}

/// The same, for a user known by id (a login, before there is a session).
pub async fn audit_subject_of(state: &AppState, user_id: i64) -> Option<Subject> {
    let user = state.store.user_session(user_id).await.ok()??;
    audit_subject(state, &user).await
}

/// Writes an event of `user`'s, from `addr`, to their household's security log (or
/// nowhere, if it cannot be told whose it is).
pub async fn audit(state: &AppState, user: &Session, kind: &'static str, addr: std::net::IpAddr, detail: String) {
    if let Some(subject) = audit_subject(state, user).await {
        state.audit.record(kind, Some(subject), (Some(&user.username), Some(addr)), detail).await;
    }
}

/// Refuses a tenant whose tenancy has ended (or was shredded): they keep reading and
/// exporting what is theirs, but no longer act in the home (add devices, make rules). The
/// consent core decides; a tenancy not started yet may prepare.
pub fn may_act(state: &AppState, user: &Session, now: i64) -> Result<(), AppError> {
    let Some(Subject::Tenancy(t)) = subject_of(user) else { return Ok(()) };
    let ownership = state.store.ownership();
    let span = ownership.rule.tenancies.iter().find(|s| s.tenancy == t);
    match span {
        Some(s) if now < s.start || ownership.rule.acts_at(Subject::Tenancy(t), now) => Ok(()),
        _ => Err(AppError::Forbidden("your tenancy has ended")),
    }
}

#[derive(Debug, Clone)]
pub struct Scope {
    /// Readings sealed under these keys are theirs to see.
    pub keys: BTreeSet<i64>,
    /// The tenancy whose own devices they see (a tenant, or a tenant's guest).
    tenancy: Option<i64>,
    /// For guests: only these devices.
    only: Option<BTreeSet<String>>,
}

impl Scope {
    pub async fn of(state: &AppState, user: &Session) -> Result<Self, AppError> {
        let (person, only) = match user.role {
            Role::Guest => {
                let inviter = user.invited_by.ok_or(AppError::Forbidden("this guest has no host"))?;
                let host =
                    state.store.user_session(inviter).await?.ok_or(AppError::Forbidden("this guest's host is gone"))?;
                (host, Some(state.store.guest_devices(user.user_id).await?))
            }
            _ => (user.clone(), None),
        };
        let keys = subject_of(&person).map(|s| state.store.keys_of(s)).unwrap_or_default();
        Ok(Self { keys, tenancy: person.tenancy_id, only })
    }

    /// Whether readings of device `id` (already known to be theirs by key) may be shown:
    /// guests see only the devices they were given.
    pub fn allows_device(&self, id: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(id))
    }

    /// Whether the device shows up for them at all. Everyone in the home sees the home's
    /// devices (and their class); a tenant's own devices are seen only by that tenant.
    pub fn sees(&self, device: &DeviceRecord) -> bool {
        let home = device.tenancy_id.is_none_or(|t| Some(t) == self.tenancy);
        home && self.only.as_ref().is_none_or(|only| only.contains(&device.id))
    }
}
