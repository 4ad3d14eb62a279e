//! Live readings for the dashboard as Server-Sent Events: one `readings` event per commit,
//! carrying that commit's readings, and a `rejected` event naming a device whose message
//! was just refused (the page refetches the device list for the reason). A browser that
//! falls behind skips ahead (it is told with a `lagged` event and should refetch); it never
//! slows ingest.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::on;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use super::routes::{EVERYONE, Route, Who};
use super::scope::Scope;
use crate::auth::{self, CurrentUser};
use crate::error::AppError;
use crate::ingest::pipeline::Committed;
use crate::reading::Reading;
use crate::state::AppState;

/// How often an idle live stream says it is still there.
pub const LIVE_TICK: Duration = Duration::from_secs(10);

/// This domain's rows of the route table.
pub(super) const ROUTES: &[Route] = &[Route::new("GET", "/api/live", Who::People(EVERYONE), |m| on(m, live))];

/// How often an open stream checks its caller again even when nothing announced a change
/// (a session that expired, a tenancy shredded by the background sweep).
const RECHECK_EVERY: Duration = Duration::from_secs(30);

/// Only readings the viewer may see are sent: theirs (by key), of devices they see. The
/// stream checks its caller again whenever access changes anywhere (and every
/// [`RECHECK_EVERY`]): it ends once the caller's credentials no longer hold, and follows a
/// changed scope otherwise.
async fn live(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    // Keys decide whose readings they are (a tenant's own device's readings are sealed
    // under the tenancy key, so this also hides them from the owner); guests are further
    // limited to their devices. Devices added later show up without reconnecting.
    let scope = Scope::of(&state, &user).await?;
    let streams = Streams {
        readings: state.ingest.subscribe(),
        refused: state.rejections.subscribe(),
        access: state.access.subscribe(),
        recheck: tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY),
    };
    let caller = Arc::new(Caller { state, headers, user_id: user.user_id });
    let stream = futures_util::stream::unfold((streams, scope), move |(mut s, mut scope)| {
        let caller = caller.clone();
        async move {
            loop {
                // A change of rights is handled before any reading that came with it.
                let event = tokio::select! {
                    biased;
                    () = caller.state.shutdown.cancelled() => return None,
                    changed = s.access.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                        scope = caller.scope().await?;
                        continue;
                    }
                    _ = s.recheck.tick() => {
                        scope = caller.scope().await?;
                        continue;
                    }
                    device = s.refused.recv() => match device {
                        // Only for a device the viewer sees, as the device list decides.
                        Ok(device) => match caller.state.store.device(&device).await {
                            Ok(Some(record)) if scope.sees(&record) => Event::default().event("rejected").data(device),
                            _ => continue,
                        },
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    },
                    received = s.readings.recv() => match received {
                        Ok(batch) => {
                            let mine: Vec<&Reading> = batch
                                .iter()
                                .filter(|c| scope.keys.contains(&c.key) && scope.allows_device(&c.reading.device))
                                .map(|c| &c.reading)
                                .collect();
                            if mine.is_empty() {
                                continue;
                            }
                            Event::default().event("readings").json_data(&mine).unwrap_or_else(|_| Event::default().event("lagged"))
                        }
                        Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                        Err(RecvError::Closed) => return None,
                    },
                };
                return Some((Ok(event), (s, scope)));
            }
        }
    });
    // An idle stream says `tick` every 10 s: a page that hears nothing for longer knows its
    // hub is gone even when no connection was closed (a Pi unplugged, Wi-Fi dropped). It has
    // a data line: browsers drop an event without one.
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(LIVE_TICK).event(Event::default().event("tick").data("tick"))))
}

/// What an open stream listens to.
struct Streams {
    readings: broadcast::Receiver<Arc<[Committed]>>,
    refused: broadcast::Receiver<String>,
    access: watch::Receiver<u64>,
    recheck: tokio::time::Interval,
}

/// Who opened a stream, to check them again.
struct Caller {
    state: AppState,
    headers: HeaderMap,
    user_id: i64,
}

impl Caller {
    /// Their scope now; `None` (the stream ends) if their credentials no longer hold.
    async fn scope(&self) -> Option<Scope> {
        let user = auth::recheck(&self.state, &self.headers).await.filter(|u| u.user_id == self.user_id)?;
        Scope::of(&self.state, &user).await.ok()
    }
}
