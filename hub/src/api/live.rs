//! Live readings for the dashboard as Server-Sent Events: one `readings` event per commit,
//! carrying that commit's readings, and a `rejected` event naming a device whose message
//! was just refused (the page refetches the device list for the reason). A browser that
//! falls behind skips ahead (it is told with a `lagged` event and should refetch); it never
//! slows ingest.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::on;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::routes::{EVERYONE, Route, Who};
use super::scope::Scope;
use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::reading::Reading;
use crate::state::AppState;

/// This domain's rows of the route table.
pub(super) const ROUTES: &[Route] = &[Route::new("GET", "/api/live", Who::People(EVERYONE), |m| on(m, live))];

/// Only readings the viewer may see are sent: theirs (by key), of devices they see.
async fn live(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    // Keys decide whose readings they are (a tenant's own device's readings are sealed
    // under the tenancy key, so this also hides them from the owner); guests are further
    // limited to their devices. Devices added later show up without reconnecting.
    let scope = Scope::of(&state, &user).await?;
    let rx = state.ingest.subscribe();
    let refused = state.rejections.subscribe();
    let filter = Arc::new(scope);
    let start = (rx, refused, state.shutdown.clone());
    let store = state.store.clone();
    let stream = futures_util::stream::unfold(start, move |(mut rx, mut refused, shutdown)| {
        let (filter, store) = (filter.clone(), store.clone());
        async move {
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return None,
                    device = refused.recv() => match device {
                        // Only for a device the viewer sees, as the device list decides.
                        Ok(device) => match store.device(&device).await {
                            Ok(Some(record)) if filter.sees(&record) => Event::default().event("rejected").data(device),
                            _ => continue,
                        },
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    },
                    received = rx.recv() => match received {
                        Ok(batch) => {
                            let scope = &*filter;
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
                return Some((Ok(event), (rx, refused, shutdown)));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
