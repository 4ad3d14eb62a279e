//! Live readings for the dashboard as Server-Sent Events: one `readings` event per commit,
//! carrying that commit's readings. A browser that falls behind skips ahead (it is told with
//! a `lagged` event and should refetch); it never slows ingest.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::CurrentUser;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/live", get(live))
}

async fn live(State(state): State<AppState>, _: CurrentUser) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.ingest.subscribe();
    let stream = futures_util::stream::unfold((rx, state.shutdown.clone()), |(mut rx, shutdown)| async move {
        let event = tokio::select! {
            () = shutdown.cancelled() => return None,
            received = rx.recv() => match received {
                Ok(batch) => Event::default().event("readings").json_data(&*batch).unwrap_or_else(|_| Event::default().event("lagged")),
                Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                Err(RecvError::Closed) => return None,
            },
        };
        Some((Ok(event), (rx, shutdown)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
