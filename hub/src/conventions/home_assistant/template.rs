//! The part of Home Assistant's value templates (Jinja) that devices' discovery configs use
//! in practice: `{{ value }}`, `{{ value_json.x }}`, `{{ value_json['x'].y }}`, `[0]`, and
//! the filters `float`, `int`, `round(n)` and `default(...)`. A template is parsed once,
//! when its config arrives; anything outside this subset is refused then, with a reason
//! the owner sees on the device. Rendering is pure and bounded by the template's length:
//! no loops, no calls, no access to anything but the message.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::conventions::Message;
use crate::reading::Value;

/// Longest template accepted.
const MAX_TEMPLATE: usize = 256;
/// Most steps into `value_json` and most filters.
const MAX_STEPS: usize = 8;

/// A parsed value template. Kept as the text it was written as, and parsed again when read
/// back, so that a stored description's templates are parsed once, when it is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Template {
    source: Source,
    filters: Vec<Filter>,
    /// As written, so that it can be kept and read again.
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// `value`: the payload as text.
    Value,
    /// A quoted constant, whatever the message (Zigbee2MQTT's `{{ "offline" }}` for a
    /// disabled device's availability).
    Constant(String),
    /// `value_json` and the steps into it.
    Json(Vec<Step>),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Float(Option<f64>),
    Int(Option<i64>),
    Round(u32),
    Default(Literal),
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// Why a template was refused, or why a message gave no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("template is longer than {MAX_TEMPLATE} characters")]
    TooLong,
    #[error(
        "unsupported template {0:?}: Hearth understands {{{{ value }}}}, {{{{ value_json.key }}}}, [..] and the filters float, int, round and default"
    )]
    Unsupported(String),
    #[error("the message is not JSON")]
    NotJson,
    #[error("the message is not text")]
    NotText,
    #[error("the message is {0} bytes, too long to be one value")]
    TooLarge(usize),
    #[error("the message has no {0:?}")]
    Missing(String),
    #[error("{0:?} is not a number")]
    NotNumber(String),
    #[error("the template gives no single value (an object, a list or null)")]
    NotAValue,
}

impl Template {
    /// Parses `text`: one `{{ ... }}` expression, with nothing else around it but spaces.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.len() > MAX_TEMPLATE {
            return Err(TemplateError::TooLong);
        }
        let unsupported = || TemplateError::Unsupported(text.to_owned());
        let inner = text
            .trim()
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
            .filter(|t| !t.contains("{{") && !t.contains("}}"))
            .ok_or_else(unsupported)?;
        let mut parts = inner.split('|');
        let source = parse_source(parts.next().unwrap_or_default().trim()).ok_or_else(unsupported)?;
        let filters = parts.map(|f| parse_filter(f.trim())).collect::<Option<Vec<_>>>().ok_or_else(unsupported)?;
        if filters.len() > MAX_STEPS {
            return Err(unsupported());
        }
        Ok(Self { source, filters, text: text.to_owned() })
    }

    /// The template as it was written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The template applied to one message's payload.
    pub fn render(&self, payload: &str) -> Result<Value, TemplateError> {
        self.render_message(&Message::new("", payload.as_bytes()))
    }

    /// The template applied to one message, whose payload is parsed as JSON once however
    /// many templates read it.
    pub fn render_message(&self, message: &Message<'_>) -> Result<Value, TemplateError> {
        let mut current = match &self.source {
            // A value is short: a longer payload is not copied (once per value that reads
            // it) to find that out.
            Source::Value => {
                let text = message.text().ok_or(TemplateError::NotText)?;
                if text.len() > 4 * crate::reading::MAX_TEXT_LEN {
                    return Err(TemplateError::TooLarge(text.len()));
                }
                Some(Json::String(text.to_owned()))
            }
            Source::Constant(text) => Some(Json::String(text.clone())),
            Source::Json(steps) => walk(message.json().ok_or(TemplateError::NotJson)?, steps),
        };
        for filter in &self.filters {
            current = apply(filter, current)?;
        }
        let missing = || TemplateError::Missing(self.describe());
        match current.ok_or_else(missing)? {
            Json::Number(n) => n.as_f64().filter(|n| n.is_finite()).map(Value::Number).ok_or(TemplateError::NotAValue),
            Json::Bool(b) => Ok(Value::Bool(b)),
            Json::String(s) => Ok(Value::Text(s)),
            Json::Null | Json::Array(_) | Json::Object(_) => Err(TemplateError::NotAValue),
        }
    }

    /// The path the template reads, for messages about it.
    fn describe(&self) -> String {
        match &self.source {
            Source::Value => "value".into(),
            Source::Constant(text) => format!("{text:?}"),
            Source::Json(steps) => steps.iter().fold("value_json".to_owned(), |path, step| match step {
                Step::Key(k) => format!("{path}.{k}"),
                Step::Index(i) => format!("{path}[{i}]"),
            }),
        }
    }
}

impl TryFrom<String> for Template {
    type Error = TemplateError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<Template> for String {
    fn from(template: Template) -> Self {
        template.text
    }
}

fn parse_source(text: &str) -> Option<Source> {
    if text == "value" {
        return Some(Source::Value);
    }
    if let Some(constant) = quoted(text) {
        return Some(Source::Constant(constant.to_owned()));
    }
    let mut rest = text.strip_prefix("value_json")?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if steps.len() >= MAX_STEPS {
            return None;
        }
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            let key = &after[..end];
            if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            steps.push(Step::Key(key.to_owned()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inside = after[..end].trim();
            steps.push(match quoted(inside) {
                Some(key) => Step::Key(key.to_owned()),
                None => Step::Index(inside.parse().ok()?),
            });
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(Source::Json(steps))
}

/// The text inside matching single or double quotes, without quotes or backslashes in it.
fn quoted(text: &str) -> Option<&str> {
    ['\'', '"']
        .into_iter()
        .find_map(|q| text.strip_prefix(q).and_then(|t| t.strip_suffix(q)).filter(|t| !t.contains(['\'', '"', '\\'])))
}

fn parse_filter(text: &str) -> Option<Filter> {
    let (name, argument) = match text.split_once('(') {
        Some((name, rest)) => (name.trim(), Some(rest.strip_suffix(')')?.trim())),
        None => (text, None),
    };
    let argument = argument.filter(|a| !a.is_empty());
    match name {
        "float" => match argument {
            None => Some(Filter::Float(None)),
            Some(a) => a.parse().ok().filter(|n: &f64| n.is_finite()).map(|n| Filter::Float(Some(n))),
        },
        "int" => match argument {
            None => Some(Filter::Int(None)),
            Some(a) => a.parse().ok().map(|n| Filter::Int(Some(n))),
        },
        "round" => Some(Filter::Round(argument.map_or(Some(0), |a| a.parse().ok().filter(|n| *n <= 10))?)),
        "default" => Some(Filter::Default(literal(argument?)?)),
        _ => None,
    }
}

fn literal(text: &str) -> Option<Literal> {
    if let Some(s) = quoted(text) {
        return Some(Literal::Text(s.to_owned()));
    }
    match text {
        "true" | "True" => Some(Literal::Bool(true)),
        "false" | "False" => Some(Literal::Bool(false)),
        _ => text.parse().ok().filter(|n: &f64| n.is_finite()).map(Literal::Number),
    }
}

fn walk(json: &Json, steps: &[Step]) -> Option<Json> {
    steps
        .iter()
        .try_fold(json, |at, step| match step {
            Step::Key(key) => at.get(key),
            Step::Index(i) => at.get(i),
        })
        .cloned()
}

/// Most bytes of a text a refusal shows.
const SHOWN: usize = 64;

/// One filter applied; `None` is Jinja's undefined (a key the message did not have).
fn apply(filter: &Filter, value: Option<Json>) -> Result<Option<Json>, TemplateError> {
    let number = |value: &Option<Json>| {
        match value {
            Some(Json::Number(n)) => n.as_f64(),
            Some(Json::String(s)) => s.trim().parse::<f64>().ok(),
            Some(Json::Bool(b)) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
        .filter(|n| n.is_finite())
    };
    // Said briefly: a message's long text is not copied into every value's refusal.
    let shown = |value: &Option<Json>| match value {
        None => "undefined".to_owned(),
        Some(Json::Array(_)) => "a list".to_owned(),
        Some(Json::Object(_)) => "an object".to_owned(),
        Some(Json::String(s)) if s.len() > SHOWN => {
            let cut = (0..=SHOWN).rev().find(|at| s.is_char_boundary(*at)).unwrap_or(0);
            format!("{}…", Json::String(s[..cut].to_owned()))
        }
        Some(other) => other.to_string(),
    };
    // A fallback stands in for a value that is there but not a number, as in HA; a value
    // the message does not have stays missing (the message gives no reading, not a zero).
    if value.is_none() && !matches!(filter, Filter::Default(_)) {
        return Ok(None);
    }
    Ok(match filter {
        Filter::Float(fallback) => match number(&value).or(*fallback) {
            Some(n) => Some(Json::from(n)),
            None => return Err(TemplateError::NotNumber(shown(&value))),
        },
        Filter::Int(fallback) => match number(&value).map(|n| n.trunc() as i64).or(*fallback) {
            Some(n) => Some(Json::from(n)),
            None => return Err(TemplateError::NotNumber(shown(&value))),
        },
        // Python's round, which HA's filter uses: halves go to the even neighbour.
        Filter::Round(places) => match number(&value) {
            Some(n) => {
                let scale = 10f64.powi(i32::try_from(*places).unwrap_or(0));
                Some(Json::from((n * scale).round_ties_even() / scale))
            }
            None => return Err(TemplateError::NotNumber(shown(&value))),
        },
        Filter::Default(literal) => match value {
            Some(value) => Some(value),
            None => Some(match literal {
                Literal::Number(n) => Json::from(*n),
                Literal::Text(s) => Json::String(s.clone()),
                Literal::Bool(b) => Json::Bool(*b),
            }),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, payload: &str) -> Result<Value, TemplateError> {
        Template::parse(template)?.render(payload)
    }

    #[test]
    fn the_templates_devices_send_give_their_values() {
        // Zigbee2MQTT
        assert_eq!(
            render("{{ value_json.temperature }}", r#"{"temperature":21.5,"linkquality":120}"#),
            Ok(Value::Number(21.5))
        );
        // Tasmota
        assert_eq!(
            render("{{value_json['AM2301'].Humidity}}", r#"{"Time":"2026-01-01T00:00:00","AM2301":{"Humidity":41.2}}"#),
            Ok(Value::Number(41.2))
        );
        assert_eq!(
            render(r#"{{ value_json["ENERGY"]["Power"] }}"#, r#"{"ENERGY":{"Power":12}}"#),
            Ok(Value::Number(12.0))
        );
        assert_eq!(render("{{ value }}", "ON"), Ok(Value::Text("ON".into())));
        assert_eq!(render("{{ value | float }}", " 7.25 "), Ok(Value::Number(7.25)));
        assert_eq!(render("{{ value_json.t | round(1) }}", r#"{"t":21.46}"#), Ok(Value::Number(21.5)));
        assert_eq!(render("{{ value_json.t | round }}", r#"{"t":21.5}"#), Ok(Value::Number(22.0)));
        assert_eq!(render("{{ value_json.t | round }}", r#"{"t":22.5}"#), Ok(Value::Number(22.0)));
        assert_eq!(render("{{ value_json.n | int }}", r#"{"n":"41.9"}"#), Ok(Value::Number(41.0)));
        assert_eq!(render("{{ value_json.list[1] }}", r#"{"list":[1,2]}"#), Ok(Value::Number(2.0)));
        assert_eq!(render("{{ value_json.contact }}", r#"{"contact":false}"#), Ok(Value::Bool(false)));
        assert_eq!(render("{{ value_json.missing | default(0) }}", "{}"), Ok(Value::Number(0.0)));
        assert_eq!(render("{{ value_json.missing | default('off') }}", "{}"), Ok(Value::Text("off".into())));
        assert_eq!(render("{{ value | float(0) }}", "unavailable"), Ok(Value::Number(0.0)));
        assert_eq!(render(r#"{{ "offline" }}"#, "online"), Ok(Value::Text("offline".into())));
        // A key the message lacks is no reading, not a zero.
        let missing = render("{{ value_json.power | float(0) }}", r#"{"state":"ON"}"#);
        assert_eq!(missing, Err(TemplateError::Missing("value_json.power".into())));
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        for template in [
            "{% if value == 'ON' %}on{% endif %}",
            "{{ value_json.x }} and more {{ value }}",
            "{{ states('sensor.x') }}",
            "{{ value_json.x | regex_replace('a', 'b') }}",
            "{{ value_json.__class__ }}x",
            "{{ value_json[x] }}",
            "{{ value_json.x | round(99) }}",
            "{{ value_json.x | default(nothing) }}",
            "value_json.x",
            "{{ value_json.9 }}",
        ] {
            let refused = Template::parse(template);
            assert!(matches!(refused, Err(TemplateError::Unsupported(_))), "{template}: {refused:?}");
            let shown = refused.map(drop).unwrap_err().to_string();
            assert!(shown.contains("unsupported template"), "{shown}");
        }
        assert_eq!(Template::parse(&format!("{{{{ value_json.{} }}}}", "a".repeat(300))), Err(TemplateError::TooLong));
    }

    #[test]
    fn a_message_without_the_value_says_so() {
        assert_eq!(
            render("{{ value_json.temperature }}", r#"{"humidity":40}"#),
            Err(TemplateError::Missing("value_json.temperature".into()))
        );
        assert_eq!(render("{{ value_json.t }}", "21.5 C"), Err(TemplateError::NotJson));
        assert_eq!(
            render("{{ value_json.t | float }}", r#"{"t":"warm"}"#),
            Err(TemplateError::NotNumber("\"warm\"".into()))
        );
        assert_eq!(render("{{ value_json.t }}", r#"{"t":{"a":1}}"#), Err(TemplateError::NotAValue));
        assert_eq!(render("{{ value_json.t }}", r#"{"t":null}"#), Err(TemplateError::NotAValue));
    }
}
