//! Asking before anything that cannot be undone or cuts something off: a modal `<dialog>`
//! that says what will happen, with the safe answer focused first. Cancel, Escape or a tap
//! outside the buttons does nothing at all.

use std::rc::Rc;

use leptos::prelude::*;

/// What is asked, and what runs if the answer is yes.
#[derive(Clone)]
struct Question {
    title: String,
    consequence: String,
    yes: String,
    then: Rc<dyn Fn()>,
}

/// The app's one confirmation dialog (provided by the logged-in shell).
#[derive(Clone, Copy)]
pub struct Confirm(RwSignal<Option<Question>, LocalStorage>);

impl Confirm {
    pub fn provide() -> Self {
        let confirm = Self(RwSignal::new_local(None));
        provide_context(confirm);
        confirm
    }

    /// Asks `title`, explaining `consequence`; `yes` names the button that does it, and
    /// only that button runs `then`.
    pub fn ask(self, title: impl Into<String>, consequence: impl Into<String>, yes: &str, then: impl Fn() + 'static) {
        self.0.set(Some(Question {
            title: title.into(),
            consequence: consequence.into(),
            yes: yes.to_owned(),
            then: Rc::new(then),
        }));
    }
}

/// The logged-in app's dialog, to ask through.
pub fn use_confirm() -> Confirm {
    expect_context::<Confirm>()
}

#[component]
pub fn ConfirmDialog(confirm: Confirm) -> impl IntoView {
    let dialog = NodeRef::<leptos::html::Dialog>::new();
    // A question belongs to the page it was asked on: going elsewhere (Back, Forward) drops
    // it, so a yes can never act on what another page shows.
    let path = leptos_router::hooks::use_location().pathname;
    Effect::new(move |seen: Option<String>| {
        let now = path.get();
        if seen.is_some_and(|before| before != now) {
            confirm.0.set(None);
        }
        now
    });
    Effect::new(move |_| {
        let asking = confirm.0.with(Option::is_some);
        if let Some(d) = dialog.get() {
            if asking && !d.open() {
                let _ = d.show_modal();
            } else if !asking && d.open() {
                d.close();
            }
        }
    });
    let text = move |f: fn(&Question) -> String| move || confirm.0.with(|q| q.as_ref().map(f)).unwrap_or_default();
    let yes = move |_| {
        let question = confirm.0.get_untracked();
        confirm.0.set(None);
        if let Some(q) = question {
            (q.then)();
        }
    };
    view! {
        <dialog node_ref=dialog id="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-consequence"
            on:close=move |_| confirm.0.set(None)>
            <h2 id="confirm-title">{text(|q| q.title.clone())}</h2>
            <p id="confirm-consequence">{text(|q| q.consequence.clone())}</p>
            <div class="row actions">
                <button type="button" id="confirm-no" class="secondary" autofocus on:click=move |_| confirm.0.set(None)>
                    "Cancel"
                </button>
                <button type="button" id="confirm-yes" class="danger" on:click=yes>{text(|q| q.yes.clone())}</button>
            </div>
        </dialog>
    }
}
