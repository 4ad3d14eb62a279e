//! Every HTTP call the UI makes, with typed results and errors. Pages never build URLs or
//! parse responses themselves. Every type that crosses the wire is the contract's
//! (`hearth-model`): this file declares none. The session cookie is sent by the browser
//! (same origin).

use gloo_net::http::{Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use hearth_model::account::{Login, NewToken, SecurityEvent, Setup, SetupStatus, Storage, Token, TokenInfo};
use hearth_model::automations::{Imported, Notification};
use hearth_model::consent::{Checkpoint, DataRequest, Grant, LedgerLine, LogEntry, Narrowing, Receipt, Verification};
use hearth_model::devices::{
    ClassChanged, ClassProposal, CommandSent, Credentials, Device, DeviceChanges, NewDevice, Readings, SendCommand,
    SetClass, SetCoapAddress, SetPlaintext, TlsInfo,
};
use hearth_model::people::{
    AcceptInvite, EndTenancy, Guest, Invite, NewGuest, NewRecipient, NewTenancy, Recipient, RecipientCredentials,
    Tenancy,
};
use hearth_model::rules::{DryRun, DryRunRequest, RuleView};
use hearth_model::{DeviceClass, ErrorBody, Granularity, Me, Rule, Trace};

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Not logged in (or the session expired).
    Unauthorized,
    /// The hub refused the request and said why: in general, and for a form, field by
    /// field (by the field's name in the request).
    Refused { message: String, fields: std::collections::BTreeMap<String, String> },
    /// The hub could not be reached.
    Network(String),
    /// The hub answered something this page cannot read (a hub and page of different
    /// versions).
    Unexpected(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unauthorized => f.write_str("please log in"),
            ApiError::Refused { message, .. } => f.write_str(message),
            // The browser's own words ("TypeError: Failed to fetch") help nobody.
            ApiError::Network(_) => {
                f.write_str("Your hub cannot be reached: check that it is running and on your network.")
            }
            ApiError::Unexpected(m) => write!(f, "the hub's answer could not be read ({m}); reload the page"),
        }
    }
}

impl std::error::Error for ApiError {}

/// Turns a 401 or any other failure status into an [`ApiError`], with the hub's reason.
async fn check(resp: Response) -> Result<Response, ApiError> {
    if resp.status() == 401 {
        return Err(ApiError::Unauthorized);
    }
    if !resp.ok() {
        let status = resp.status();
        let body = resp
            .json::<ErrorBody>()
            .await
            .unwrap_or_else(|_| ErrorBody { error: format!("HTTP {status}"), fields: Default::default() });
        return Err(ApiError::Refused { message: body.error, fields: body.fields });
    }
    Ok(resp)
}

/// Sends a request and reads its answer as text. Every call goes through this one
/// non-generic future; only parsing is per type. (A generic fetch per answer type cost the
/// wasm a copy of the whole exchange for each: see decision 0026.)
async fn exchange(method: &str, url: &str, body: Option<(&'static str, String)>) -> Result<String, ApiError> {
    let builder = match method {
        "GET" => Request::get(url),
        "PUT" => Request::put(url),
        "PATCH" => Request::patch(url),
        "DELETE" => Request::delete(url),
        _ => Request::post(url),
    };
    let request = match body {
        Some((content_type, body)) => builder.header("content-type", content_type).body(body),
        None => builder.build(),
    };
    let request = request.map_err(|e| ApiError::Network(e.to_string()))?;
    let resp = request.send().await.map_err(|e| ApiError::Network(e.to_string()))?;
    check(resp).await?.text().await.map_err(|e| ApiError::Unexpected(e.to_string()))
}

/// The hub's answer, read as `T`.
fn read<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    parse(text).map_err(|e| ApiError::Unexpected(e.to_string()))
}

/// JSON read as `T`: every answer, live batch and stored checkpoint the UI reads. (Read by
/// way of a `serde_json::Value` instead, the wasm is 7 KB smaller but 0.7 KB larger in
/// brotli, which is what a phone downloads.)
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(text)
}

/// `body` as JSON, ready for [`exchange`].
fn json<B: Serialize>(body: &B) -> Result<Option<(&'static str, String)>, ApiError> {
    let text = serde_json::to_string(body).map_err(|e| ApiError::Unexpected(e.to_string()))?;
    Ok(Some(("application/json", text)))
}

async fn get<T: DeserializeOwned>(url: &str) -> Result<T, ApiError> {
    read(&exchange("GET", url, None).await?)
}

async fn post<B: Serialize, T: DeserializeOwned>(url: &str, body: Option<&B>) -> Result<T, ApiError> {
    let body = match body {
        Some(b) => json(b)?,
        None => None,
    };
    read(&exchange("POST", url, body).await?)
}

/// For endpoints that answer 204 with no body.
async fn send_empty(method: &str, url: &str) -> Result<(), ApiError> {
    exchange(method, url, None).await.map(drop)
}

/// A password on its way to the hub, wiped from memory once sent.
fn secret(password: &str) -> Zeroizing<String> {
    Zeroizing::new(password.to_owned())
}

pub async fn setup_required() -> Result<bool, ApiError> {
    Ok(get::<SetupStatus>("/api/setup").await?.setup_required)
}

pub async fn setup(code: &str, username: &str, password: &str) -> Result<Me, ApiError> {
    let request = Setup { code: code.to_owned(), username: username.to_owned(), password: secret(password) };
    post("/api/setup", Some(&request)).await
}

pub async fn login(username: &str, password: &str) -> Result<Me, ApiError> {
    let request = Login { username: username.to_owned(), password: secret(password) };
    match post("/api/login", Some(&request)).await {
        Err(ApiError::Unauthorized) => {
            Err(ApiError::Refused { message: "wrong user name or password".into(), fields: Default::default() })
        }
        other => other,
    }
}

pub async fn logout() -> Result<(), ApiError> {
    send_empty("POST", "/api/logout").await
}

pub async fn me() -> Result<Me, ApiError> {
    get("/api/me").await
}

/// Whether the hub takes readings (a full card refuses them), and its room.
pub async fn storage() -> Result<Storage, ApiError> {
    get("/api/storage").await
}

pub async fn devices() -> Result<Vec<Device>, ApiError> {
    get("/api/devices").await
}

pub async fn add_device(name: &str) -> Result<Credentials, ApiError> {
    post("/api/devices", Some(&NewDevice { name: name.to_owned() })).await
}

/// Sets one of a device's values now (a switch, a light).
pub async fn command(id: &str, metric: &str, value: hearth_model::Value) -> Result<CommandSent, ApiError> {
    post(&format!("/api/devices/{id}/command"), Some(&SendCommand { metric: metric.to_owned(), value })).await
}

/// What people choose for a device: its name, room, favourite, hidden, names of values.
pub async fn change_device(id: &str, changes: &DeviceChanges) -> Result<Device, ApiError> {
    read(&exchange("PATCH", &format!("/api/devices/{id}"), json(changes)?).await?)
}

pub async fn regenerate(id: &str) -> Result<Credentials, ApiError> {
    post::<(), _>(&format!("/api/devices/{id}/credentials"), None).await
}

pub async fn remove(id: &str) -> Result<(), ApiError> {
    send_empty("DELETE", &format!("/api/devices/{id}")).await
}

/// The raw readings over `[from, to)` (the hub says if there were more than it returns).
pub async fn raw(id: &str, metric: &str, from: i64, to: i64) -> Result<Readings, ApiError> {
    get(&format!("/api/devices/{id}/metrics/{metric}/readings?from={from}&to={to}")).await
}

/// At most `points` buckets over `[from, to)`.
pub async fn history(id: &str, metric: &str, from: i64, to: i64, points: usize) -> Result<Readings, ApiError> {
    get(&format!("/api/devices/{id}/metrics/{metric}/readings?from={from}&to={to}&points={points}")).await
}

/// Reclassifies a device; during a tenancy the answer may be a proposal for the tenant.
pub async fn set_class(id: &str, class: DeviceClass) -> Result<ClassChanged, ApiError> {
    put(&format!("/api/devices/{id}/class"), &SetClass { class }).await
}

/// Says where a device serves CoAP for rules' commands (`None` takes it away).
pub async fn set_coap_address(id: &str, address: Option<String>) -> Result<Device, ApiError> {
    put(&format!("/api/devices/{id}/coap-address"), &SetCoapAddress { address }).await
}

/// Marks whether a device may use plain MQTT (for devices that cannot do TLS).
pub async fn set_plaintext(id: &str, plaintext: bool) -> Result<Device, ApiError> {
    put(&format!("/api/devices/{id}/plaintext"), &SetPlaintext { plaintext }).await
}

/// How the hub is trusted: its CA's fingerprint.
pub async fn tls_info() -> Result<TlsInfo, ApiError> {
    get("/api/tls").await
}

/// Proposed class changes: the owner's all, a tenant's of their tenancy.
pub async fn class_proposals() -> Result<Vec<ClassProposal>, ApiError> {
    get("/api/class-proposals").await
}

/// The tenant agrees to a proposed class change (or, with `false`, declines it).
pub async fn decide_class(id: i64, agree: bool) -> Result<ClassProposal, ApiError> {
    let answer = if agree { "accept" } else { "decline" };
    post::<(), _>(&format!("/api/class-proposals/{id}/{answer}"), None).await
}

pub async fn tenancies() -> Result<Vec<Tenancy>, ApiError> {
    get("/api/tenancies").await
}

pub async fn create_tenancy(end: Option<i64>, retention_days: Option<u32>) -> Result<Invite, ApiError> {
    post("/api/tenancies", Some(&NewTenancy { start: None, end, retention_days })).await
}

pub async fn end_tenancy(id: i64) -> Result<Tenancy, ApiError> {
    post(&format!("/api/tenancies/{id}/end"), Some(&EndTenancy { at: None })).await
}

pub async fn shred_tenancy(id: i64) -> Result<(), ApiError> {
    send_empty("POST", &format!("/api/tenancies/{id}/shred")).await
}

pub async fn accept_invite(code: &str, username: &str, password: &str) -> Result<(), ApiError> {
    let request = AcceptInvite { code: code.to_owned(), username: username.to_owned(), password: secret(password) };
    post::<_, Me>("/api/invites/accept", Some(&request)).await.map(drop)
}

pub async fn recipients() -> Result<Vec<Recipient>, ApiError> {
    get("/api/recipients").await
}

pub async fn register_recipient(name: &str, kind: &str) -> Result<RecipientCredentials, ApiError> {
    post("/api/recipients", Some(&NewRecipient { name: name.to_owned(), kind: kind.to_owned() })).await
}

pub async fn consent_requests() -> Result<Vec<DataRequest>, ApiError> {
    get("/api/consent/requests").await
}

/// Grants a request; `granularity` narrows it to something coarser.
pub async fn grant(id: i64, granularity: Option<Granularity>) -> Result<Grant, ApiError> {
    post(&format!("/api/consent/requests/{id}/grant"), Some(&Narrowing { granularity, ..Narrowing::default() })).await
}

pub async fn deny(id: i64) -> Result<(), ApiError> {
    send_empty("POST", &format!("/api/consent/requests/{id}/deny")).await
}

pub async fn grants() -> Result<Vec<Grant>, ApiError> {
    get("/api/consent/grants").await
}

pub async fn revoke(id: &str) -> Result<Receipt, ApiError> {
    post::<(), _>(&format!("/api/consent/grants/{id}/revoke"), None).await
}

pub async fn access_log() -> Result<Vec<LogEntry>, ApiError> {
    get("/api/consent/access-log").await
}

/// Checks the log; given a checkpoint kept earlier (its JWS), also that the log still
/// holds what it held then.
pub async fn verify_log(checkpoint: Option<&str>) -> Result<Verification, ApiError> {
    match checkpoint {
        // A compact JWS is base64url and dots: nothing to escape in a query.
        Some(jws) => get(&format!("/api/consent/access-log/verify?checkpoint={jws}")).await,
        None => get("/api/consent/access-log/verify").await,
    }
}

/// The log's head, signed, to keep.
pub async fn checkpoint() -> Result<Checkpoint, ApiError> {
    get("/api/consent/access-log/checkpoint").await
}

pub async fn ledger() -> Result<Vec<LedgerLine>, ApiError> {
    get("/api/consent/ledger").await
}

/// The caller's security log (the owner's includes the hub's own), newest first.
pub async fn security_log() -> Result<Vec<SecurityEvent>, ApiError> {
    get("/api/security-log").await
}

/// The caller's API tokens (never the tokens themselves).
pub async fn tokens() -> Result<Vec<TokenInfo>, ApiError> {
    get("/api/tokens").await
}

/// A new API token, shown once.
pub async fn create_token(name: &str, days: Option<u16>) -> Result<Token, ApiError> {
    post("/api/tokens", Some(&NewToken { name: name.to_owned(), days })).await
}

pub async fn revoke_token(id: i64) -> Result<(), ApiError> {
    send_empty("DELETE", &format!("/api/tokens/{id}")).await
}

pub async fn guests() -> Result<Vec<Guest>, ApiError> {
    get("/api/guests").await
}

pub async fn invite_guest(devices: &[String]) -> Result<Invite, ApiError> {
    post("/api/guests", Some(&NewGuest { devices: devices.to_vec() })).await
}

pub async fn remove_guest(id: i64) -> Result<(), ApiError> {
    send_empty("DELETE", &format!("/api/guests/{id}")).await
}

async fn put<B: Serialize, T: DeserializeOwned>(url: &str, body: &B) -> Result<T, ApiError> {
    read(&exchange("PUT", url, json(body)?).await?)
}

pub async fn rules() -> Result<Vec<RuleView>, ApiError> {
    get("/api/rules").await
}

pub async fn create_rule(rule: &Rule) -> Result<RuleView, ApiError> {
    post("/api/rules", Some(rule)).await
}

pub async fn update_rule(id: i64, rule: &Rule) -> Result<RuleView, ApiError> {
    put(&format!("/api/rules/{id}"), rule).await
}

pub async fn delete_rule(id: i64) -> Result<(), ApiError> {
    send_empty("DELETE", &format!("/api/rules/{id}")).await
}

pub async fn rule_runs(id: i64) -> Result<Vec<Trace>, ApiError> {
    get(&format!("/api/rules/{id}/runs")).await
}

pub async fn dry_run(rule: &Rule, from: i64, to: i64) -> Result<DryRun, ApiError> {
    post("/api/rules/dry-run", Some(&DryRunRequest { rule: rule.clone(), from, to })).await
}

pub async fn notifications() -> Result<Vec<Notification>, ApiError> {
    get("/api/notifications").await
}

pub async fn dismiss_notification(id: i64) -> Result<(), ApiError> {
    send_empty("DELETE", &format!("/api/notifications/{id}")).await
}

/// Imports rules from a file's text: JSON if it starts like JSON, YAML otherwise.
pub async fn import_rules(text: &str) -> Result<Imported, ApiError> {
    let yaml = !text.trim_start().starts_with('{');
    let content_type = if yaml { "application/yaml" } else { "application/json" };
    read(&exchange("POST", "/api/rules/import", Some((content_type, text.to_owned()))).await?)
}
