//! Every HTTP call the UI makes, with typed results and errors. Pages never build URLs or
//! parse responses themselves. The session cookie is sent by the browser (same origin).

use gloo_net::http::{Request, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use hearth_model::rules::{DryRun, DryRunRequest, RuleView};
pub use hearth_model::{Bucket, DeviceClass, ErrorBody, Role, Rule, Trace, Value};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Me {
    pub username: String,
    pub role: Role,
    #[serde(default)]
    pub tenancy: Option<i64>,
}

impl Me {
    /// Owners and tenants have data of their own to share.
    pub fn is_subject(&self) -> bool {
        matches!(self.role, Role::Owner | Role::Tenant)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Metric {
    pub metric: String,
    pub unit: Option<String>,
    pub ts: i64,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rejection {
    pub count: u64,
    pub last_reason: String,
    pub last_at: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub created: i64,
    pub metrics: Vec<Metric>,
    pub rejected: Option<Rejection>,
    pub class: DeviceClass,
    /// `owner` or `tenant`.
    #[serde(default)]
    pub belongs_to: String,
    #[serde(default)]
    pub manageable: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MqttExample {
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub mosquitto_pub: String,
    pub mosquitto_pub_json: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CoapExample {
    pub uri: String,
    pub coap_client: String,
}

/// New credentials: shown once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Credentials {
    pub id: String,
    pub secret: String,
    pub mqtt: Option<MqttExample>,
    pub coap: Option<CoapExample>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct History {
    pub from: i64,
    pub to: i64,
    #[serde(default)]
    pub buckets: Vec<Bucket>,
}

/// One reading from the live stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiveReading {
    pub device: String,
    pub metric: String,
    pub ts: i64,
    pub value: Value,
    pub unit: Option<String>,
}

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

async fn parse<T: DeserializeOwned>(resp: Response) -> Result<T, ApiError> {
    check(resp).await?.json::<T>().await.map_err(|e| ApiError::Unexpected(e.to_string()))
}

async fn get<T: DeserializeOwned>(url: &str) -> Result<T, ApiError> {
    let resp = Request::get(url).send().await.map_err(|e| ApiError::Network(e.to_string()))?;
    parse(resp).await
}

async fn post<B: Serialize, T: DeserializeOwned>(url: &str, body: Option<&B>) -> Result<T, ApiError> {
    let builder = Request::post(url);
    let request = match body {
        Some(b) => builder.json(b).map_err(|e| ApiError::Network(e.to_string()))?,
        None => builder.build().map_err(|e| ApiError::Network(e.to_string()))?,
    };
    let resp = request.send().await.map_err(|e| ApiError::Network(e.to_string()))?;
    parse(resp).await
}

/// For endpoints that answer 204 with no body.
async fn send_empty(method: &str, url: &str) -> Result<(), ApiError> {
    let builder = if method == "DELETE" { Request::delete(url) } else { Request::post(url) };
    let resp = builder.send().await.map_err(|e| ApiError::Network(e.to_string()))?;
    check(resp).await.map(drop)
}

#[derive(Deserialize)]
struct SetupStatus {
    setup_required: bool,
}

pub async fn setup_required() -> Result<bool, ApiError> {
    Ok(get::<SetupStatus>("/api/setup").await?.setup_required)
}

#[derive(Serialize)]
struct SetupRequest<'a> {
    code: &'a str,
    username: &'a str,
    password: &'a str,
}

pub async fn setup(code: &str, username: &str, password: &str) -> Result<Me, ApiError> {
    post("/api/setup", Some(&SetupRequest { code, username, password })).await
}

#[derive(Serialize)]
struct LoginRequest<'a> {
    username: &'a str,
    password: &'a str,
}

pub async fn login(username: &str, password: &str) -> Result<Me, ApiError> {
    match post("/api/login", Some(&LoginRequest { username, password })).await {
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

pub async fn devices() -> Result<Vec<Device>, ApiError> {
    get("/api/devices").await
}

#[derive(Serialize)]
struct NewDevice<'a> {
    name: &'a str,
}

pub async fn add_device(name: &str) -> Result<Credentials, ApiError> {
    post("/api/devices", Some(&NewDevice { name })).await
}

pub async fn regenerate(id: &str) -> Result<Credentials, ApiError> {
    post::<(), _>(&format!("/api/devices/{id}/credentials"), None).await
}

pub async fn remove(id: &str) -> Result<(), ApiError> {
    send_empty("DELETE", &format!("/api/devices/{id}")).await
}

/// `points` buckets of min/avg/max over `[from, to)`.
pub async fn history(id: &str, metric: &str, from: i64, to: i64, points: usize) -> Result<History, ApiError> {
    get(&format!("/api/devices/{id}/metrics/{metric}/readings?from={from}&to={to}&points={points}")).await
}

#[derive(Serialize)]
struct SetClass<'a> {
    class: &'a str,
}

pub async fn set_class(id: &str, class: &str) -> Result<(), ApiError> {
    let request = Request::put(&format!("/api/devices/{id}/class"))
        .json(&SetClass { class })
        .map_err(|e| ApiError::Network(e.to_string()))?;
    let resp = request.send().await.map_err(|e| ApiError::Network(e.to_string()))?;
    check(resp).await.map(drop)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Tenancy {
    pub id: i64,
    pub start: i64,
    pub end: Option<i64>,
    pub retention_days: i64,
    pub shredded: Option<i64>,
    pub tenant: Option<String>,
    pub shred_due: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Invite {
    pub code: String,
    pub expires: i64,
}

pub async fn tenancies() -> Result<Vec<Tenancy>, ApiError> {
    get("/api/tenancies").await
}

#[derive(Serialize)]
struct NewTenancy {
    end: Option<i64>,
    retention_days: Option<u32>,
}

pub async fn create_tenancy(end: Option<i64>, retention_days: Option<u32>) -> Result<Invite, ApiError> {
    post("/api/tenancies", Some(&NewTenancy { end, retention_days })).await
}

#[derive(Serialize)]
struct EndTenancy {
    at: Option<i64>,
}

pub async fn end_tenancy(id: i64) -> Result<Tenancy, ApiError> {
    post(&format!("/api/tenancies/{id}/end"), Some(&EndTenancy { at: None })).await
}

pub async fn shred_tenancy(id: i64) -> Result<(), ApiError> {
    send_empty("POST", &format!("/api/tenancies/{id}/shred")).await
}

#[derive(Serialize)]
struct AcceptInvite<'a> {
    code: &'a str,
    username: &'a str,
    password: &'a str,
}

pub async fn accept_invite(code: &str, username: &str, password: &str) -> Result<(), ApiError> {
    post::<_, serde_json::Value>("/api/invites/accept", Some(&AcceptInvite { code, username, password }))
        .await
        .map(drop)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Recipient {
    pub id: String,
    pub name: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecipientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

pub async fn recipients() -> Result<Vec<Recipient>, ApiError> {
    get("/api/recipients").await
}

#[derive(Serialize)]
struct NewRecipient<'a> {
    name: &'a str,
    kind: &'a str,
}

pub async fn register_recipient(name: &str, kind: &str) -> Result<RecipientCredentials, ApiError> {
    post("/api/recipients", Some(&NewRecipient { name, kind })).await
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub text: String,
    #[serde(default)]
    pub amount: Option<f64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub period: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Terms {
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub metrics: Vec<String>,
    pub granularity: String,
    pub window_from: i64,
    pub window_to: Option<i64>,
    pub duration_days: u32,
    pub purpose: String,
    pub offer: Offer,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DataRequest {
    pub id: i64,
    pub recipient: String,
    pub recipient_kind: String,
    pub terms: Terms,
    pub created: i64,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Receipt {
    pub id: String,
    pub event: String,
    pub created: i64,
    pub jws: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Grant {
    pub id: String,
    pub recipient: String,
    pub terms: Terms,
    pub created: i64,
    pub expires: i64,
    pub status: String,
    pub receipts: Vec<Receipt>,
}

pub async fn consent_requests() -> Result<Vec<DataRequest>, ApiError> {
    get("/api/consent/requests").await
}

#[derive(Serialize)]
struct Narrowing<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    granularity: Option<&'a str>,
}

/// Grants a request; `granularity` narrows it to something coarser.
pub async fn grant(id: i64, granularity: Option<&str>) -> Result<Grant, ApiError> {
    post(&format!("/api/consent/requests/{id}/grant"), Some(&Narrowing { granularity })).await
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LogEntry {
    pub seq: i64,
    pub ts: i64,
    pub kind: String,
    pub recipient: String,
    pub grant_id: Option<String>,
    pub detail_json: serde_json::Value,
}

pub async fn access_log() -> Result<Vec<LogEntry>, ApiError> {
    get("/api/consent/access-log").await
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Verification {
    pub ok: bool,
    #[serde(default)]
    pub entries: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}

pub async fn verify_log() -> Result<Verification, ApiError> {
    get("/api/consent/access-log/verify").await
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Accrual {
    pub periods: u32,
    pub amount: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LedgerLine {
    pub grant_id: String,
    pub recipient: String,
    pub purpose: String,
    pub offer: Offer,
    pub status: String,
    pub granted: i64,
    pub ended: Option<i64>,
    pub accrued: Accrual,
}

pub async fn ledger() -> Result<Vec<LedgerLine>, ApiError> {
    get("/api/consent/ledger").await
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Guest {
    pub id: i64,
    pub username: String,
    pub devices: Vec<String>,
}

pub async fn guests() -> Result<Vec<Guest>, ApiError> {
    get("/api/guests").await
}

#[derive(Serialize)]
struct NewGuest<'a> {
    devices: &'a [String],
}

pub async fn invite_guest(devices: &[String]) -> Result<Invite, ApiError> {
    post("/api/guests", Some(&NewGuest { devices })).await
}

pub async fn remove_guest(id: i64) -> Result<(), ApiError> {
    send_empty("DELETE", &format!("/api/guests/{id}")).await
}

async fn put<B: Serialize, T: DeserializeOwned>(url: &str, body: &B) -> Result<T, ApiError> {
    let request = Request::put(url).json(body).map_err(|e| ApiError::Network(e.to_string()))?;
    let resp = request.send().await.map_err(|e| ApiError::Network(e.to_string()))?;
    parse(resp).await
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Notification {
    pub id: i64,
    pub created: i64,
    pub message: String,
    #[serde(default)]
    pub rule: Option<String>,
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Imported {
    pub imported: usize,
}

/// Imports rules from a file's text: JSON if it starts like JSON, YAML otherwise.
pub async fn import_rules(text: &str) -> Result<Imported, ApiError> {
    let yaml = !text.trim_start().starts_with('{');
    let content_type = if yaml { "application/yaml" } else { "application/json" };
    let request = Request::post("/api/rules/import")
        .header("content-type", content_type)
        .body(text.to_owned())
        .map_err(|e| ApiError::Network(e.to_string()))?;
    let resp = request.send().await.map_err(|e| ApiError::Network(e.to_string()))?;
    parse(resp).await
}
