//! Budgets: each household's share of what the hub holds for it. The owner's household
//! and each tenancy have their own share of every bounded resource, so that one household
//! (or a device it controls, or someone holding that device's credentials) filling its
//! share takes nothing from another's: past its share, its own oldest gives way, or its
//! own new request is refused. When a share is reached the owner is told in the app which
//! budget, for whom, at most once an hour per budget and household.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hearth_model::automations::{Note, NotificationSource};

use crate::clock::Clock;
use crate::config::BudgetsConfig;
use crate::consent::Subject;
use crate::store::Store;

/// How often the owner is told of the same budget reached by the same household.
const TELL_EVERY_MS: i64 = 3600 * 1000;

/// A bounded resource with a share per household.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget {
    /// MQTT sessions logged in at once.
    Sessions,
    /// MQTT sessions kept for devices that are away.
    PersistentSessions,
    /// Commands queued for one sleeping session.
    QueuedCommands,
    /// Devices.
    Devices,
    /// Devices that are bridges.
    Bridges,
    /// Bytes of what devices said of themselves.
    DescribedBytes,
}

impl Budget {
    /// Its name in the configuration (`[budgets]`).
    pub fn key(self) -> &'static str {
        match self {
            Self::Sessions => "sessions",
            Self::PersistentSessions => "persistent_sessions",
            Self::QueuedCommands => "queued_commands",
            Self::Devices => "devices",
            Self::Bridges => "bridges",
            Self::DescribedBytes => "described_bytes",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Sessions => "MQTT sessions logged in at once",
            Self::PersistentSessions => "MQTT sessions kept for devices that are away",
            Self::QueuedCommands => "commands waiting for one sleeping device",
            Self::Devices => "devices",
            Self::Bridges => "bridges",
            Self::DescribedBytes => "bytes of what its devices said of themselves",
        }
    }

    fn gives_way(self) -> &'static str {
        match self {
            Self::Sessions => "a new session was refused",
            Self::PersistentSessions => "the session away longest gave way",
            Self::QueuedCommands => "the oldest waiting command was dropped",
            Self::Devices => "a new device was refused",
            Self::Bridges => "another bridge was refused",
            Self::DescribedBytes => "a device's new description was refused",
        }
    }
}

/// The shares, and who was told of which. Cheap to clone.
#[derive(Clone)]
pub struct Budgets {
    limits: Arc<BudgetsConfig>,
    store: Store,
    clock: Clock,
    told: Arc<Mutex<HashMap<(Budget, Subject), i64>>>,
}

impl Budgets {
    /// Whether `household`, holding `held` devices, may have one more; if not, the owner is
    /// told, and the error says which budget.
    pub fn room_for_device(&self, household: Subject, held: usize, detail: &str) -> Result<(), String> {
        let limit = self.limit(Budget::Devices);
        if held < limit {
            return Ok(());
        }
        self.reached(Budget::Devices, household, detail);
        Err(format!("the household already has {held} devices, its budget (budgets.devices = {limit})"))
    }

    pub fn new(limits: BudgetsConfig, store: Store, clock: Clock) -> Self {
        Self { limits: Arc::new(limits), store, clock, told: Arc::default() }
    }

    /// One household's share of `budget`.
    pub fn limit(&self, budget: Budget) -> usize {
        match budget {
            Budget::Sessions => self.limits.sessions,
            Budget::PersistentSessions => self.limits.persistent_sessions,
            Budget::QueuedCommands => self.limits.queued_commands,
            Budget::Devices => self.limits.devices,
            Budget::Bridges => self.limits.bridges,
            Budget::DescribedBytes => self.limits.described_bytes,
        }
    }

    /// `household` reached its share of `budget`; `detail` says where (a device). Logged,
    /// and the owner is told unless told of the same within the hour.
    pub fn reached(&self, budget: Budget, household: Subject, detail: &str) {
        let now = self.clock.now_ms();
        let due = self.told.lock().is_ok_and(|mut told| {
            let due = told.get(&(budget, household)).is_none_or(|at| now - at >= TELL_EVERY_MS);
            if due {
                told.insert((budget, household), now);
            }
            due
        });
        tracing::debug!(budget = budget.key(), %household, detail, "budget reached");
        if !due {
            return;
        }
        let whose = match household {
            Subject::Owner => "Your household".to_owned(),
            Subject::Tenancy(t) => format!("Tenancy {t}"),
        };
        let message = format!(
            "{whose} reached its budget of {} {} ({detail}): {}. Other households are not affected; \
             the budget is budgets.{} in the hub's configuration.",
            self.limit(budget),
            budget.what(),
            budget.gives_way(),
            budget.key(),
        );
        tracing::warn!(budget = budget.key(), %household, detail, "a household reached its budget");
        let store = self.store.clone();
        tokio::spawn(async move {
            let Ok(Some(owner)) = store.owner_id().await else { return };
            let note = Note { source: NotificationSource::Hub, message, rule: None, trigger: None };
            if let Err(error) = store.add_notification(owner, &note, now).await {
                tracing::warn!(%error, "could not tell the owner a budget was reached");
            }
        });
    }
}
