//! What a form's last submission got wrong: a problem with a field shows beside that field
//! (the hub names the field in its error body), anything else once, under the form.

use leptos::prelude::*;

use crate::api::ApiError;

/// The error of a form's last submission.
#[derive(Clone, Copy)]
pub struct FormError(RwSignal<Option<ApiError>>);

impl FormError {
    pub fn new() -> Self {
        Self(RwSignal::new(None))
    }

    pub fn set(self, error: ApiError) {
        self.0.set(Some(error));
    }

    pub fn clear(self) {
        self.0.set(None);
    }

    /// The problem with `field`, if the hub named one, for beside the field.
    pub fn beside(self, field: &'static str) -> impl IntoView {
        move || {
            let problem = self.0.with(|e| match e {
                Some(ApiError::Refused { fields, .. }) => fields.get(field).cloned(),
                _ => None,
            });
            problem.map(|p| view! { <p class="field-error" id=format!("{field}-problem")>{p}</p> })
        }
    }

    /// The error, unless it is only about fields (those show beside them).
    pub fn general(self) -> impl IntoView {
        move || {
            self.0.with(|e| match e {
                Some(ApiError::Refused { fields, .. }) if !fields.is_empty() => None,
                Some(e) => Some(view! { <p class="error">{e.to_string()}</p> }),
                None => None,
            })
        }
    }
}

impl Default for FormError {
    fn default() -> Self {
        Self::new()
    }
}
