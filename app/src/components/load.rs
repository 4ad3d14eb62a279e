//! Loading a page's data: resources inside `Transition` and `ErrorBoundary`, with the last
//! loaded value kept while the page refreshes, so lists update in place.

use leptos::prelude::*;

use crate::api::ApiError;

/// The last value `resource` loaded: kept while it reloads or when a reload fails (the
/// failure shows in the page's [`Loading`]).
pub fn latest<T>(resource: LocalResource<Result<T, ApiError>>) -> Memo<T>
where
    T: Clone + Default + PartialEq + Send + Sync + 'static,
{
    Memo::new(move |prev: Option<&T>| match resource.get() {
        Some(Ok(value)) => value,
        _ => prev.cloned().unwrap_or_default(),
    })
}

/// What failed to load, in words.
pub fn error_text(errors: &Errors) -> String {
    errors.iter().map(|(_, e)| e.to_string()).collect::<Vec<_>>().join("; ")
}

/// "Loading…" until `resource` first answers, then the reason if its last load failed.
#[component]
pub fn Loading<T>(
    resource: LocalResource<Result<T, ApiError>>,
    /// e.g. "Loading your rules…".
    waiting: &'static str,
) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
{
    view! {
        <Transition fallback=move || view! { <p class="muted">{waiting}</p> }>
            <ErrorBoundary fallback=|errors| view! { <p class="error load-error">{move || error_text(&errors.get())}</p> }>
                {move || resource.get().map(|r| r.map(drop))}
            </ErrorBoundary>
        </Transition>
    }
}
