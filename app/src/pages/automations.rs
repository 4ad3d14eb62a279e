//! Automations: the rule editor (a form for one trigger, one condition and a list of
//! actions; JSON for anything more), a dry run over recorded history, the rules with their
//! last runs and traces, and notifications from rules and the hub.

use hearth_model::rules::{Action, Condition, Mode, Op, Rule, Trigger};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::de::DeserializeOwned;

use hearth_model::automations::Notification;
use hearth_model::rules::{DryRun, RuleView};
use hearth_model::{Trace, Value};

use hearth_model::present;

use crate::api::{self, ApiError};
use crate::app::Home;
use crate::components::confirm::use_confirm;
use crate::components::load::{error_text, latest};
use crate::time::{ago, local, now_ms};

#[component]
pub fn AutomationsPage() -> impl IntoView {
    let rules = LocalResource::new(api::rules);
    let notes = LocalResource::new(api::notifications);
    let reload = move || {
        rules.refetch();
        notes.refetch();
    };
    // Runs happen on the hub at any time: keep the page current while it is open.
    if let Ok(handle) = set_interval_with_handle(reload, std::time::Duration::from_secs(2)) {
        on_cleanup(move || handle.clear());
    }
    // What was last loaded. Lists are keyed, and each card reads its rule from here, so a
    // refresh changes only what changed, in place: a list of runs that is open stays open.
    let rule_list: Memo<Vec<RuleView>> = latest(rules);
    let note_list: Memo<Vec<Notification>> = latest(notes);
    let error = RwSignal::new(None::<String>);
    view! {
        <h2>"Automations"</h2>
        <p class="muted">"Rules run on your hub itself: they keep working when the internet or a cloud service is down."</p>
        <Transition fallback=|| view! { <p class="muted">"Loading your rules…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <p class="error" id="load-error">{move || error_text(&errors.get())}</p> }>
                {move || rules.get().map(|r| r.map(drop))}
                {move || notes.get().map(|r| r.map(drop))}
            </ErrorBoundary>
        </Transition>
        {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        <section class="card" id="notifications">
            <h3>"Notifications"</h3>
            {move || note_list.with(Vec::is_empty).then(|| view! { <p class="muted">"Nothing new."</p> })}
            <ul>
                <For each=move || note_list.get() key=|n| n.id let:n>
                    <li class="notification">
                        <strong>{n.note.message}</strong> " "
                        <span class="muted">{n.note.rule.map(|r| format!("{r} · ")).unwrap_or_default()} {local(n.created)}</span> " "
                        <button class="secondary" on:click=move |_| spawn_local(async move {
                            match api::dismiss_notification(n.id).await {
                                Ok(()) => notes.refetch(),
                                Err(e) => error.set(Some(e.to_string())),
                            }
                        })>"Dismiss"</button>
                    </li>
                </For>
            </ul>
        </section>
        <RuleEditor on_saved=reload />
        <div id="rules">
            <For each=move || rule_list.get() key=|r| r.id let:r>
                <RuleCard id=r.id rules=rule_list on_change=reload error=error />
            </For>
        </div>
        <ImportExport on_imported=reload />
    }
}

/// Rules as a file: download them (JSON or YAML), or paste a file to add its rules.
#[component]
fn ImportExport(
    /// Called after rules were imported.
    on_imported: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let text = RwSignal::new(String::new());
    let result = RwSignal::new(None::<Result<String, String>>);
    let import = move |_| {
        let body = text.get_untracked();
        spawn_local(async move {
            match api::import_rules(&body).await {
                Ok(i) => {
                    result.set(Some(Ok(format!("Imported {} rule(s).", i.imported))));
                    text.set(String::new());
                    on_imported();
                }
                Err(e) => result.set(Some(Err(e.to_string()))),
            }
        });
    };
    view! {
        <section class="card" id="rules-file">
            <h3>"Rules as a file"</h3>
            <p>"Download your rules: "
                <a href="/api/rules/export?format=yaml" download="hearth-rules.yaml">"YAML"</a> " · "
                <a href="/api/rules/export?format=json" download="hearth-rules.json">"JSON"</a></p>
            <label>"Add rules from a file (paste its text: JSON or YAML with a list under \"rules\")"
                <textarea id="rules-import" rows="6" prop:value=move || text.get() on:input=move |ev| text.set(event_target_value(&ev))></textarea>
            </label>
            <button class="secondary" id="rules-import-submit" on:click=import>"Import"</button>
            {move || result.get().map(|r| match r {
                Ok(m) => view! { <p class="ok">{m}</p> }.into_any(),
                Err(e) => view! { <p class="error">{e}</p> }.into_any(),
            })}
        </section>
    }
}

/// A value typed in a field: on/off and true/false are switches, numbers are numbers,
/// anything else is text.
fn typed(s: &str) -> Value {
    match s.trim() {
        "on" | "true" => Value::Bool(true),
        "off" | "false" => Value::Bool(false),
        t => as_typed(t),
    }
}

/// A command's value: sent to the device as typed (a number stays a number).
fn as_typed(s: &str) -> Value {
    let t = s.trim();
    t.parse::<f64>().map_or_else(|_| Value::Text(t.to_owned()), Value::Number)
}

fn number(what: &str, s: &str) -> Result<Option<f64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<f64>().map(Some).map_err(|_| format!("{what}: {s:?} is not a number"))
}

/// A choice from a `<select>`, by its name in the rule's JSON (`single`, `<=`, ...).
fn by_name<T: DeserializeOwned>(what: &str, name: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| format!("{what}: {name:?} is unknown"))
}

/// Whole seconds from a number of minutes.
fn seconds(minutes: f64) -> u32 {
    (minutes * 60.0).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The editor's fields.
#[derive(Clone, Copy)]
struct Form {
    name: RwSignal<String>,
    mode: RwSignal<String>,
    trigger: RwSignal<String>,
    t_device: RwSignal<String>,
    t_metric: RwSignal<String>,
    /// For a change: the value it becomes (empty: any change).
    t_to: RwSignal<String>,
    t_above: RwSignal<String>,
    t_below: RwSignal<String>,
    t_minutes: RwSignal<String>,
    t_at: RwSignal<String>,
    t_every: RwSignal<String>,
    t_cron: RwSignal<String>,
    condition: RwSignal<String>,
    c_device: RwSignal<String>,
    c_metric: RwSignal<String>,
    c_op: RwSignal<String>,
    c_value: RwSignal<String>,
    c_after: RwSignal<String>,
    c_before: RwSignal<String>,
    actions: RwSignal<Vec<Action>>,
}

impl Form {
    fn new() -> Self {
        let s = |v: &str| RwSignal::new(v.to_owned());
        Self {
            name: s(""),
            mode: s("single"),
            trigger: s("change"),
            t_device: s(""),
            t_metric: s(""),
            t_to: s(""),
            t_above: s(""),
            t_below: s(""),
            t_minutes: s(""),
            t_at: s("07:00"),
            t_every: s("60"),
            t_cron: s(""),
            condition: s("none"),
            c_device: s(""),
            c_metric: s(""),
            c_op: s("<"),
            c_value: s(""),
            c_after: s("22:00"),
            c_before: s("06:00"),
            actions: RwSignal::new(Vec::new()),
        }
    }

    /// The rule the form describes, or what is missing.
    fn build(&self) -> Result<Rule, String> {
        let g = |s: RwSignal<String>| s.get_untracked().trim().to_owned();
        let (device, metric) = (g(self.t_device), g(self.t_metric));
        let minutes = number("minutes", &g(self.t_minutes))?;
        let trigger = match g(self.trigger).as_str() {
            "reading" => Trigger::Reading { device, metric },
            "change" => {
                let to = match g(self.t_to).as_str() {
                    "" => None,
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    other => Some(Value::Text(other.to_owned())),
                };
                Trigger::Change { device, metric, to }
            }
            "threshold" => Trigger::Threshold {
                device,
                metric,
                above: number("above", &g(self.t_above))?,
                below: number("below", &g(self.t_below))?,
                for_s: minutes.map(seconds),
            },
            "silent" => Trigger::Silent { device, for_s: seconds(minutes.unwrap_or(0.0)) },
            "time" => Trigger::Time { at: g(self.t_at), weekdays: Vec::new() },
            "interval" => Trigger::Interval { every_s: number("seconds", &g(self.t_every))?.unwrap_or(0.0) as u32 },
            "cron" => Trigger::Cron { expr: g(self.t_cron) },
            "start" => Trigger::Start,
            other => return Err(format!("unknown trigger {other:?}")),
        };
        let conditions = match g(self.condition).as_str() {
            "compare" => vec![Condition::Compare {
                device: g(self.c_device),
                metric: g(self.c_metric),
                op: by_name::<Op>("comparison", &g(self.c_op))?,
                value: typed(&g(self.c_value)),
            }],
            "time" => {
                vec![Condition::Time {
                    after: Some(g(self.c_after)),
                    before: Some(g(self.c_before)),
                    weekdays: Vec::new(),
                }]
            }
            _ => Vec::new(),
        };
        let actions = self.actions.get_untracked();
        if actions.is_empty() {
            return Err("add at least one action".into());
        }
        let mut rule = blank(g(self.name));
        rule.mode = by_name::<Mode>("mode", &g(self.mode))?;
        rule.triggers = vec![trigger];
        rule.conditions = conditions;
        rule.actions = actions;
        Ok(rule)
    }
}

/// Rule texts from the hub name devices by id; people know them by name.
fn named(home: Home, text: &str) -> String {
    home.devices.with_untracked(|devices| devices.iter().fold(text.to_owned(), |t, d| t.replace(&d.id, &d.name)))
}

/// A rule with a name and nothing else yet, as the hub's defaults fill it in.
fn blank(name: String) -> Rule {
    Rule {
        name,
        enabled: true,
        triggers: Vec::new(),
        conditions: Vec::new(),
        actions: Vec::new(),
        mode: Mode::default(),
        max_runs: 10,
        catch_up: false,
        insist: false,
    }
}

/// Options for a device `<select>`: the devices of this home by room (bridges are no
/// rule's device: their devices are).
fn device_options(home: Home) -> impl IntoView {
    move || {
        present::by_room(&home.devices.get())
            .into_iter()
            .map(|(room, list)| {
                view! {
                    <optgroup label=room>
                        {list.into_iter().map(|d| view! { <option value=d.id.clone()>{d.name}</option> }).collect_view()}
                    </optgroup>
                }
            })
            .collect_view()
    }
}

/// A metric's text field offering the values its device reported or announced (those it
/// takes as commands, with `settable`), each with its name and unit.
fn metric_field(
    home: Home,
    id: &'static str,
    sig: RwSignal<String>,
    device: RwSignal<String>,
    settable: bool,
) -> impl IntoView {
    let list = format!("{id}-known");
    let known = move || {
        home.devices.with(|ds| {
            let Some(d) = ds.iter().find(|d| d.id == device.get()) else { return Vec::new() };
            present::metrics(d, settable)
        })
    };
    view! {
        <input id=id list=list.clone() placeholder="pick or type" autocomplete="off" aria-label="Value of the device"
            prop:value=move || sig.get() on:input=move |ev| sig.set(event_target_value(&ev)) />
        <datalist id=list>
            {move || known().into_iter().map(|(metric, label, unit)| {
                let text = match unit { Some(u) => format!("{label} ({u})"), None => label };
                view! { <option value=metric>{text}</option> }
            }).collect_view()}
        </datalist>
    }
}

/// The value a command sends, offering what the device takes (on/off, a list's options)
/// and saying its unit.
fn value_field(home: Home, sig: RwSignal<String>, device: RwSignal<String>, metric: RwSignal<String>) -> impl IntoView {
    let described = move || {
        home.devices.with(|ds| {
            let d = ds.iter().find(|d| d.id == device.get())?;
            let m = metric.get();
            Some((present::choices(d, m.trim()), present::unit(d, m.trim())))
        })
    };
    view! {
        <input id="action-value" list="action-value-known" placeholder="on" autocomplete="off" aria-label="Value to send"
            prop:value=move || sig.get() on:input=move |ev| sig.set(event_target_value(&ev)) />
        <datalist id="action-value-known">
            {move || described().map(|(choices, _)| choices.into_iter().map(|c| view! { <option value=c.clone()>{c.clone()}</option> }).collect_view())}
        </datalist>
        {move || described().and_then(|(_, unit)| unit).map(|u| view! { <span class="muted">{u}</span> })}
    }
}

/// For a change trigger: the value it waits for, in the words of the value's class ("Open"
/// for a door), and the trigger in words ("When Front door's Contact becomes Open").
#[component]
fn Becomes(
    /// The home's devices.
    home: Home,
    /// The editor's fields.
    form: Form,
) -> impl IntoView {
    // (value, words) for each value it can become; none for a number.
    let options = move || {
        home.devices.with(|ds| {
            let d = ds.iter().find(|d| d.id == form.t_device.get())?;
            let metric = form.t_metric.get();
            let metric = metric.trim();
            let binary = present::described(d, metric).is_some_and(|v| v.on_off)
                || d.metrics.iter().any(|m| m.metric == metric && matches!(m.value, Value::Bool(_)));
            let choices: Vec<(String, String)> = match binary {
                true => {
                    let (on, off) = present::state_words(present::class(d, metric).as_deref());
                    vec![("true".into(), on.into()), ("false".into(), off.into())]
                }
                false => present::choices(d, metric).into_iter().map(|o| (o.clone(), o)).collect(),
            };
            let words = format!("When {}'s {}", d.name, present::label(d, metric));
            Some((choices, words))
        })
    };
    let sentence = move || {
        let (choices, words) = options()?;
        let to = form.t_to.get();
        Some(match choices.iter().find(|(v, _)| *v == to) {
            Some((_, becomes)) => format!("{words} becomes {becomes}"),
            None => format!("{words} changes"),
        })
    };
    view! {
        {move || options().filter(|(choices, _)| !choices.is_empty()).map(|(choices, _)| view! {
            <label>"Becomes"
                <select id="trigger-to" prop:value=move || form.t_to.get() on:change=move |ev| form.t_to.set(event_target_value(&ev))>
                    <option value="">"anything (any change)"</option>
                    {choices.into_iter().map(|(value, words)| view! { <option value=value>{words}</option> }).collect_view()}
                </select>
            </label>
        })}
        {move || sentence().map(|s| view! { <p class="muted" id="trigger-words">{s}</p> })}
    }
}

/// A `<select>` bound to a signal, named `name` for those who cannot see what it sits in.
fn choice(
    id: &'static str,
    name: &'static str,
    sig: RwSignal<String>,
    options: &'static [(&'static str, &'static str)],
) -> impl IntoView {
    view! {
        <select id=id aria-label=name prop:value=move || sig.get() on:change=move |ev| sig.set(event_target_value(&ev))>
            {options.iter().map(|(v, label)| view! { <option value=*v>{*label}</option> }).collect_view()}
        </select>
    }
}

/// A text `<input>` bound to a signal.
fn field(id: &'static str, sig: RwSignal<String>, placeholder: &'static str) -> impl IntoView {
    view! { <input id=id placeholder=placeholder prop:value=move || sig.get() on:input=move |ev| sig.set(event_target_value(&ev)) /> }
}

#[component]
fn RuleEditor(
    /// Called after a rule was saved.
    on_saved: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let f = Form::new();
    // New action being composed.
    let a_kind = RwSignal::new("mqtt".to_owned());
    let a_device = RwSignal::new(String::new());
    let a_metric = RwSignal::new(String::new());
    let a_value = RwSignal::new(String::new());
    let a_message = RwSignal::new(String::new());
    let a_seconds = RwSignal::new("60".to_owned());
    let a_name = RwSignal::new(String::new());
    let json_mode = RwSignal::new(false);
    let json_text = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let saved = RwSignal::new(None::<String>);
    let dry = RwSignal::new(None::<DryRun>);
    let dry_days = RwSignal::new("1".to_owned());
    // Device selects start on the first device once the list is there.
    Effect::new(move |_| {
        let first = present::by_room(&home.devices.get()).into_iter().flat_map(|(_, list)| list).next();
        if let Some(first) = first {
            for sig in [f.t_device, f.c_device, a_device] {
                if sig.get_untracked().is_empty() {
                    sig.set(first.id.clone());
                }
            }
        }
    });

    let add_action = move |_| {
        let g = |s: RwSignal<String>| s.get_untracked().trim().to_owned();
        let action = match g(a_kind).as_str() {
            "mqtt" => Action::Mqtt { device: g(a_device), metric: g(a_metric), value: as_typed(&g(a_value)) },
            "notify" => Action::Notify { message: g(a_message) },
            "delay" => Action::Delay { seconds: g(a_seconds).parse().unwrap_or(0) },
            _ => Action::Set { name: g(a_name), value: typed(&g(a_value)) },
        };
        f.actions.update(|a| a.push(action));
    };
    let current = move || -> Result<Rule, String> {
        if json_mode.get_untracked() {
            api::parse(&json_text.get_untracked()).map_err(|e| format!("the JSON is not valid: {e}"))
        } else {
            f.build()
        }
    };
    // A value no device has: the hub's reason, and saving anyway if the author insists.
    let unknown = RwSignal::new(None::<String>);
    let save = move |insist: bool| {
        // One message at a time: a new attempt clears what the last one said.
        saved.set(None);
        unknown.set(None);
        let mut rule = match current() {
            Ok(r) => r,
            Err(e) => return error.set(Some(e)),
        };
        rule.insist |= insist;
        spawn_local(async move {
            match api::create_rule(&rule).await {
                Err(ApiError::Refused { fields, .. }) if fields.contains_key("metric") => {
                    error.set(None);
                    unknown.set(fields.get("metric").cloned());
                }
                Ok(r) => {
                    error.set(None);
                    saved.set(Some(format!("Saved \"{}\".", r.rule.name)));
                    f.name.set(String::new());
                    f.actions.set(Vec::new());
                    json_mode.set(false);
                    dry.set(None);
                    on_saved();
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        save(false);
    };
    let run_dry = move |_| {
        saved.set(None);
        let rule = match current() {
            Ok(r) => r,
            Err(e) => return error.set(Some(e)),
        };
        let days = dry_days.get_untracked().parse::<i64>().unwrap_or(1);
        let to = now_ms();
        spawn_local(async move {
            match api::dry_run(&rule, to - days * 86_400_000, to).await {
                Ok(d) => {
                    error.set(None);
                    dry.set(Some(d));
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    let to_json = move |_| match f.build() {
        Ok(rule) => {
            json_text.set(serde_json::to_string_pretty(&rule).unwrap_or_default());
            json_mode.set(true);
        }
        Err(_) => {
            json_text.set(serde_json::to_string_pretty(&blank(f.name.get_untracked())).unwrap_or_default());
            json_mode.set(true);
        }
    };
    let t = f.trigger;
    let c = f.condition;
    view! {
        <section class="card" id="rule-editor">
            <h3>"New rule"</h3>
            <form on:submit=submit class="wide">
                <label>"Name" {field("rule-name", f.name, "Porch light at dusk")}</label>
                {move || (!json_mode.get()).then(|| view! {
                    <fieldset>
                        <legend>"When"</legend>
                        {choice("trigger-type", "When", t, &[
                            ("change", "a value changes"), ("reading", "a reading arrives"), ("threshold", "a value crosses a limit"),
                            ("silent", "a device goes silent"), ("time", "at a time of day"), ("interval", "every few seconds"),
                            ("cron", "on a schedule (cron)"), ("start", "the hub starts"),
                        ])}
                        {move || matches!(t.get().as_str(), "reading" | "change" | "threshold" | "silent").then(|| view! {
                            <label>"Device" <select id="trigger-device" prop:value=move || f.t_device.get()
                                on:change=move |ev| f.t_device.set(event_target_value(&ev))>{device_options(home)}</select></label>
                        })}
                        {move || matches!(t.get().as_str(), "reading" | "change" | "threshold").then(|| view! {
                            <label>"Value" {metric_field(home, "trigger-metric", f.t_metric, f.t_device, false)}</label>
                        })}
                        {move || (t.get() == "change").then(|| view! { <Becomes home=home form=f /> })}
                        {move || (t.get() == "threshold").then(|| view! {
                            <div class="row">
                                <label>"Above" {field("trigger-above", f.t_above, "")}</label>
                                <label>"Below" {field("trigger-below", f.t_below, "")}</label>
                            </div>
                        })}
                        {move || matches!(t.get().as_str(), "threshold" | "silent").then(|| view! {
                            <label>"For (minutes)" {field("trigger-minutes", f.t_minutes, "optional for a limit")}</label>
                        })}
                        {move || (t.get() == "time").then(|| view! {
                            <label>"At" <input id="trigger-at" type="time" prop:value=move || f.t_at.get()
                                on:input=move |ev| f.t_at.set(event_target_value(&ev)) /></label>
                        })}
                        {move || (t.get() == "interval").then(|| view! { <label>"Every (seconds)" {field("trigger-every", f.t_every, "60")}</label> })}
                        {move || (t.get() == "cron").then(|| view! { <label>"Cron expression" {field("trigger-cron", f.t_cron, "0 7 * * 1-5")}</label> })}
                    </fieldset>
                    <fieldset>
                        <legend>"Only if"</legend>
                        {choice("condition-type", "Only if", c, &[("none", "always"), ("compare", "a value compares"), ("time", "within hours")])}
                        {move || (c.get() == "compare").then(|| view! {
                            <label>"Device" <select id="condition-device" prop:value=move || f.c_device.get()
                                on:change=move |ev| f.c_device.set(event_target_value(&ev))>{device_options(home)}</select></label>
                            <div class="row">
                                {metric_field(home, "condition-metric", f.c_metric, f.c_device, false)}
                                {choice("condition-op", "Comparison", f.c_op, &[("<", "<"), ("<=", "≤"), ("==", "="), ("!=", "≠"), (">=", "≥"), (">", ">")])}
                                {field("condition-value", f.c_value, "value")}
                            </div>
                        })}
                        {move || (c.get() == "time").then(|| view! {
                            <div class="row">
                                <label>"After" <input type="time" prop:value=move || f.c_after.get() on:input=move |ev| f.c_after.set(event_target_value(&ev)) /></label>
                                <label>"Before" <input type="time" prop:value=move || f.c_before.get() on:input=move |ev| f.c_before.set(event_target_value(&ev)) /></label>
                            </div>
                        })}
                    </fieldset>
                    <fieldset>
                        <legend>"Then"</legend>
                        <ol id="rule-actions">
                            {move || f.actions.get().into_iter().enumerate().map(|(i, a)| view! {
                                <li>{named(home, &a.describe())} " "
                                    <button type="button" class="secondary" on:click=move |_| f.actions.update(|v| { v.remove(i); })>"Remove"</button>
                                </li>
                            }).collect_view()}
                        </ol>
                        {choice("action-type", "Action", a_kind, &[("mqtt", "send a command"), ("notify", "notify me"), ("delay", "wait"), ("set", "set a helper value")])}
                        {move || (a_kind.get() == "mqtt").then(|| view! {
                            <label>"To device" <select id="action-device" prop:value=move || a_device.get()
                                on:change=move |ev| a_device.set(event_target_value(&ev))>{device_options(home)}</select></label>
                            <div class="row">
                                {metric_field(home, "action-metric", a_metric, a_device, true)}
                                {value_field(home, a_value, a_device, a_metric)}
                            </div>
                        })}
                        {move || (a_kind.get() == "notify").then(|| view! { {field("action-message", a_message, "The door is open")} })}
                        {move || (a_kind.get() == "delay").then(|| view! { <label>"Seconds" {field("action-seconds", a_seconds, "60")}</label> })}
                        {move || (a_kind.get() == "set").then(|| view! {
                            <div class="row">{field("action-name", a_name, "away")} {field("action-set-value", a_value, "on")}</div>
                        })}
                        <button type="button" class="secondary" id="action-add" on:click=add_action>"Add this action"</button>
                    </fieldset>
                    <label>"If it triggers again while running"
                        {choice("rule-mode", "If it triggers again while running", f.mode, &[("single", "ignore it"), ("restart", "start over"), ("queued", "run after"), ("parallel", "run alongside")])}
                    </label>
                })}
                {move || json_mode.get().then(|| view! {
                    <label>"Rule as JSON (several triggers, nested conditions, cloud actions: see the README)"
                        <textarea id="rule-json" rows="14" prop:value=move || json_text.get()
                            on:input=move |ev| json_text.set(event_target_value(&ev))></textarea>
                    </label>
                })}
                <div class="row">
                    <button type="submit" id="rule-save">"Save rule"</button>
                    {move || (!json_mode.get()).then(|| view! { <button type="button" class="secondary" on:click=to_json>"Edit as JSON"</button> })}
                    {choice("dry-days", "Past period to try the rule on", dry_days, &[("1", "last day"), ("7", "last week"), ("30", "last month")])}
                    <button type="button" class="secondary" id="rule-dry-run" on:click=run_dry>"Try it on past data"</button>
                </div>
            </form>
            {move || error.get().map(|e| view! { <p class="error" id="rule-error">{e}</p> })}
            {move || unknown.get().map(|why| view! {
                <div class="error" id="rule-unknown-metric" role="alert">
                    <p>{why}</p>
                    <button type="button" class="secondary" id="rule-insist" on:click=move |_| save(true)>"Save anyway"</button>
                </div>
            })}
            {move || saved.get().map(|s| view! { <p class="ok">{s}</p> })}
            {move || dry.get().map(|d| view! {
                <div id="dry-run">
                    <p><strong>{format!("Would have fired {} time{}", d.fires.len(), if d.fires.len() == 1 { "" } else { "s" })}</strong>
                        {format!(" over {} readings{}.", d.readings, if d.truncated { " (list cut short)" } else { "" })}</p>
                    <ul>
                        {d.fires.into_iter().map(|w| view! {
                            <li>{local(w.at)} ": " {named(home, &w.trigger)} " → "
                                {if w.run { w.actions.join("; ") } else { format!("not run: {}", w.checks.iter().filter(|c| !c.passed).map(|c| c.condition.clone()).collect::<Vec<_>>().join(", ")) }}
                            </li>
                        }).collect_view()}
                    </ul>
                </div>
            })}
        </section>
    }
    .into_any()
}

#[component]
fn RuleCard(
    /// The rule's id.
    id: i64,
    /// The rules as last loaded; the card shows the one with `id`, as it changes.
    rules: Memo<Vec<RuleView>>,
    /// Called after a change.
    on_change: impl Fn() + Copy + Send + Sync + 'static,
    /// Where errors go.
    error: RwSignal<Option<String>>,
) -> impl IntoView {
    let rule = Memo::new(move |_| rules.with(|list| list.iter().find(|r| r.id == id).cloned()));
    let enabled = move || rule.with(|r| r.as_ref().is_some_and(|r| r.rule.enabled));
    let traces = RwSignal::new(None::<Vec<Trace>>);
    let fetch_runs = move || {
        spawn_local(async move {
            match api::rule_runs(id).await {
                Ok(t) => traces.set(Some(t)),
                Err(e) => error.set(Some(e.to_string())),
            }
        })
    };
    // An open list of runs follows new runs.
    Effect::new(move |_| {
        rule.with(|r| r.as_ref().and_then(|r| r.last_run.as_ref().map(|t| (t.run, t.status))));
        if traces.get_untracked().is_some() {
            fetch_runs();
        }
    });
    let toggle = move |_| {
        let Some(mut def) = rule.get_untracked().map(|r| r.rule) else { return };
        def.enabled = !def.enabled;
        spawn_local(async move {
            match api::update_rule(id, &def).await {
                Ok(_) => on_change(),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    let show_runs = move |_| {
        if traces.get_untracked().is_some() {
            return traces.set(None);
        }
        fetch_runs();
    };
    let confirm = use_confirm();
    let remove = move |_| {
        let name = rule.with_untracked(|r| r.as_ref().map(|r| r.rule.name.clone())).unwrap_or_default();
        confirm.ask(
            format!("Delete the rule “{name}”?"),
            "It stops at once and cannot be brought back.",
            "Delete rule",
            move || {
                spawn_local(async move {
                    match api::delete_rule(id).await {
                        Ok(()) => on_change(),
                        Err(e) => error.set(Some(e.to_string())),
                    }
                })
            },
        );
    };
    let json = move || rule.with(|r| r.as_ref().map(|r| serde_json::to_string_pretty(&r.rule).unwrap_or_default()));
    let Some(home) = use_context::<Home>() else { return view! { <p>"…"</p> }.into_any() };
    let last_run = move || match rule.with(|r| r.as_ref().and_then(|r| r.last_run.clone())) {
        None => "Not run yet.".to_owned(),
        Some(t) => {
            format!("Last: {} — {} ({})", t.status, named(home, &t.trigger.text), ago(t.started, home.tick.get()))
        }
    };
    view! {
        <article class="card rule" data-rule=id>
            <div class="row">
                <h3>{move || rule.with(|r| r.as_ref().map(|r| r.rule.name.clone()))}</h3>
                <label class="inline"><input type="checkbox" class="rule-enabled" prop:checked=enabled on:change=toggle /> " on"</label>
            </div>
            <p class="last-run">{last_run}</p>
            <div class="row">
                <button class="secondary runs" on:click=show_runs>"Recent runs"</button>
                <button class="secondary delete-rule" on:click=remove>"Delete"</button>
            </div>
            <details><summary class="muted">"Definition"</summary><pre>{json}</pre></details>
            {move || traces.get().map(|list| view! {
                <ol class="traces">
                    {list.into_iter().map(|t| view! {
                        <li class="trace" data-status=t.status.as_str()>
                            <strong>{t.status.as_str()}</strong> " · " {local(t.started)} " · " {named(home, &t.trigger.text)}
                            {t.note.map(|n| view! { <p class="muted">{n}</p> })}
                            <ul>
                                {t.checks.into_iter().map(|c| view! { <li>{if c.passed { "✓ " } else { "✗ " }} {named(home, &c.condition)}</li> }).collect_view()}
                                {t.steps.into_iter().map(|s| view! { <li>{if s.ok { "→ " } else { "✗ " }} {s.action} ": " {s.result}</li> }).collect_view()}
                            </ul>
                        </li>
                    }).collect_view()}
                </ol>
            })}
        </article>
    }
    .into_any()
}
