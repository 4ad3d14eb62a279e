//! Who is asking: the one-time setup code, password hashing (Argon2id), browser sessions,
//! API tokens, and the extractor that turns a request into a user or a 401. It must not
//! decide what a user may see beyond "logged in or not" (that is each route's business).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, watch};
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::devices::random_string;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::{RecipientRecord, Role, Session};

pub const SESSION_COOKIE: &str = "hearth_session";
/// How long a browser session lasts.
pub const SESSION_TTL_MS: i64 = 30 * 24 * 3600 * 1000;
/// Wrong setup codes tolerated before the code is replaced with a new one.
const SETUP_ATTEMPTS: u32 = 10;
/// Login attempts free of delay per (user name, source address), and per source address
/// across user names; each one past these waits twice as long as the one before.
const FREE_PER_NAME: u32 = 5;
const FREE_PER_ADDRESS: u32 = 20;
/// Attempts at one user name from addresses it has not logged in from, wherever they come
/// from: many addresses guessing one password are slowed down too, while its owner, from
/// an address they logged in from before, is not.
const FREE_PER_NAME_ANYWHERE: u32 = 50;
/// How long an address where a login succeeded counts as known, and how many are kept.
const TRUST_MS: i64 = 90 * 24 * 3600 * 1000;
const MAX_TRUSTED: usize = 1024;
/// The longest wait, and how long after its last attempt a name or address is forgotten.
const LOGIN_WINDOW_MS: i64 = 15 * 60 * 1000;
/// (Name, address) pairs and addresses tracked before forgotten ones are dropped.
const MAX_TRACKED: usize = 10_000;
/// Setup codes avoid look-alike characters; people type them from a terminal.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// SHA-256 of a session or API token: the database stores only this.
pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A fresh random token (session cookie or API token), about 190 bits.
pub fn new_token() -> Result<String, AppError> {
    random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 32).map_err(AppError::internal)
}

/// A code people type from a screen or paper: `groups` groups of 4 characters from an
/// alphabet without look-alikes, joined by dashes (about 19.6 bits per group).
pub fn human_code(groups: usize) -> Result<String, crate::crypto::Error> {
    let raw = random_string(CODE_ALPHABET, 4 * groups)?;
    Ok(raw.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-"))
}

/// A typed code as compared: without dashes or spaces, in upper case.
pub fn normalize_code(code: &str) -> String {
    code.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect()
}

/// Which queue a password check waits in. An address a login succeeded from before has its
/// own, so the owner's login is never queued behind a flood of guesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Clean,
    Suspect,
}

/// Hashes passwords off the async threads, one at a time per lane: Argon2id takes tens of
/// MiB and most of a core for a moment, which a Pi must not be made to do a hundred times
/// at once, and at most two run together.
#[derive(Clone)]
pub struct PasswordHasherPool {
    clean: Arc<Semaphore>,
    suspect: Arc<Semaphore>,
}

impl Default for PasswordHasherPool {
    fn default() -> Self {
        Self { clean: Arc::new(Semaphore::new(1)), suspect: Arc::new(Semaphore::new(1)) }
    }
}

impl PasswordHasherPool {
    fn lane(&self, lane: Lane) -> &Arc<Semaphore> {
        match lane {
            Lane::Clean => &self.clean,
            Lane::Suspect => &self.suspect,
        }
    }

    /// Hashes a new password (setup, invites: only once their code has been checked).
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, AppError> {
        let _permit = self.clean.acquire().await.map_err(AppError::internal)?;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
        })
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)
    }

    /// Verifies `password` against `hash`, or against a dummy hash when the user does not
    /// exist, so that timing does not tell which user names exist.
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        hash: Option<String>,
        lane: Lane,
    ) -> Result<bool, AppError> {
        let _permit = self.lane(lane).acquire().await.map_err(AppError::internal)?;
        tokio::task::spawn_blocking(move || {
            let (hash, real) = match hash {
                Some(h) => (h, true),
                None => (dummy_hash().to_owned(), false),
            };
            let ok = PasswordHash::new(&hash)
                .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok());
            ok && real
        })
        .await
        .map_err(AppError::internal)
    }
}

/// A hash with the same parameters as real ones, made once, to verify against when the user
/// name is unknown.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"not a password", &SaltString::generate(&mut OsRng))
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// The one-time code that lets the first person create the owner account. It exists only
/// while no owner exists, is printed on start and written to `setup-code` (mode 0600).
pub struct SetupCode {
    code: Zeroizing<String>,
    failures: u32,
    file: PathBuf,
}

impl SetupCode {
    /// Makes a new code and writes it to `data_dir/setup-code`.
    pub fn create(data_dir: &Path) -> std::io::Result<Self> {
        let code = Zeroizing::new(human_code(3).map_err(std::io::Error::other)?);
        let file = data_dir.join("setup-code");
        crate::durable::write(&file, format!("{}\n", code.as_str()).as_bytes(), 0o600)?;
        Ok(Self { code, failures: 0, file })
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Compares in constant time, ignoring case, dashes and spaces (people retype it).
    fn matches(&self, attempt: &str) -> bool {
        bool::from(normalize_code(attempt).as_bytes().ct_eq(normalize_code(&self.code).as_bytes()))
    }
}

/// The setup state shared by the API: `None` once an owner exists.
#[derive(Clone, Default)]
pub struct Setup(Arc<Mutex<Option<SetupCode>>>);

/// Outcome of presenting a setup code.
pub enum SetupCheck {
    Accepted,
    Wrong,
    /// Too many wrong codes: a new one was made (see the hub's log or the file).
    Replaced,
    NotNeeded,
}

impl Setup {
    pub fn new(code: Option<SetupCode>) -> Self {
        Self(Arc::new(Mutex::new(code)))
    }

    pub fn needed(&self) -> bool {
        self.0.lock().is_ok_and(|c| c.is_some())
    }

    pub fn check(&self, attempt: &str, data_dir: &Path) -> SetupCheck {
        let Ok(mut guard) = self.0.lock() else { return SetupCheck::NotNeeded };
        let Some(code) = guard.as_mut() else { return SetupCheck::NotNeeded };
        if code.matches(attempt) {
            return SetupCheck::Accepted;
        }
        code.failures += 1;
        if code.failures < SETUP_ATTEMPTS {
            return SetupCheck::Wrong;
        }
        match SetupCode::create(data_dir) {
            Ok(new) => {
                announce(&new, None);
                *code = new;
            }
            Err(error) => tracing::error!(%error, "could not write a new setup code"),
        }
        SetupCheck::Replaced
    }

    /// The owner exists: the code stops working and its file is removed (durably: a used
    /// code that comes back after a power cut would only mislead).
    pub fn finish(&self) {
        if let Ok(mut guard) = self.0.lock()
            && let Some(code) = guard.take()
        {
            forget(code.file());
        }
    }
}

/// Removes a setup code's file, saying so if it cannot.
pub fn forget(file: &Path) {
    if let Err(error) = crate::durable::remove(file) {
        tracing::error!(%error, file = %file.display(), "could not remove the used setup code");
    }
}

/// Prints the setup code, and beside it the fingerprint of the hub's CA, which the owner
/// compares with what their browser shows before trusting it.
pub fn announce(code: &SetupCode, fingerprint: Option<&str>) {
    tracing::warn!(file = %code.file().display(), "no owner yet: open the web UI and enter the setup code");
    println!("\n  Hearth setup code: {}\n  (also in {})", code.code(), code.file().display());
    if let Some(fingerprint) = fingerprint {
        println!("  Hub CA fingerprint (SHA-256), to compare before trusting it:\n  {fingerprint}");
    }
    println!();
}

/// Login attempts, counted when they start (before the password is hashed), per (user
/// name, source address) and per source address. A few are free; each one after that must
/// wait twice as long as the one before (1 s, 2 s, 4 s, ... up to 15 minutes), and an
/// attempt made too soon is refused without being judged. A success clears its pair. So a
/// burst of guesses sent at once gets a handful judged, and someone guessing elsewhere on
/// the network never locks a user out of their own device.
#[derive(Clone, Default)]
pub struct LoginLimiter(Arc<Mutex<Limits>>);

#[derive(Default)]
struct Limits {
    pairs: HashMap<(String, IpAddr), Strikes>,
    addresses: HashMap<IpAddr, Strikes>,
    names: HashMap<String, Strikes>,
    /// Addresses a login succeeded from, and when.
    known: HashMap<IpAddr, i64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Strikes {
    count: u32,
    last: i64,
    next_allowed: i64,
}

impl Strikes {
    fn forgotten(&self, now: i64) -> bool {
        now - self.last > LOGIN_WINDOW_MS && now >= self.next_allowed
    }

    fn strike(&mut self, now: i64, free: u32) {
        if self.forgotten(now) {
            *self = Strikes::default();
        }
        self.count += 1;
        self.last = now;
        if self.count >= free {
            let doublings = (self.count - free).min(20);
            self.next_allowed = now + (1000_i64 << doublings).min(LOGIN_WINDOW_MS);
        }
    }

    fn wait(&self, now: i64) -> i64 {
        if self.forgotten(now) { 0 } else { (self.next_allowed - now).max(0) }
    }
}

/// A login attempt that has been counted: judge it in its lane, and report a success.
#[derive(Debug)]
pub struct Attempt {
    key: (String, IpAddr),
    pub lane: Lane,
}

impl LoginLimiter {
    /// Counts an attempt to log in as `username` from `addr`, or says how many ms to wait.
    pub fn begin(&self, username: &str, addr: IpAddr, now: i64) -> Result<Attempt, i64> {
        let Ok(mut limits) = self.0.lock() else { return Err(1000) };
        if limits.pairs.len() >= MAX_TRACKED
            || limits.addresses.len() >= MAX_TRACKED
            || limits.names.len() >= MAX_TRACKED
        {
            limits.pairs.retain(|_, s| !s.forgotten(now));
            limits.addresses.retain(|_, s| !s.forgotten(now));
            limits.names.retain(|_, s| !s.forgotten(now));
        }
        let known = limits.known.get(&addr).is_some_and(|t| now - t < TRUST_MS);
        let key = (username.to_owned(), addr);
        let pair = limits.pairs.get(&key).copied().unwrap_or_default();
        let address = limits.addresses.get(&addr).copied().unwrap_or_default();
        let name = if known { Strikes::default() } else { limits.names.get(username).copied().unwrap_or_default() };
        let wait = pair.wait(now).max(address.wait(now)).max(name.wait(now));
        if wait > 0 {
            return Err(wait);
        }
        // Spread over more names and addresses than can be tracked: under attack. Only a
        // known address, or a clean one while there is room, still gets through.
        let full = limits.pairs.len() >= MAX_TRACKED || limits.addresses.len() >= MAX_TRACKED;
        if full && !known && (address.count > 0 || !limits.addresses.contains_key(&addr)) {
            return Err(1000);
        }
        let lane = if known { Lane::Clean } else { Lane::Suspect };
        limits.pairs.entry(key.clone()).or_default().strike(now, FREE_PER_NAME);
        limits.addresses.entry(addr).or_default().strike(now, FREE_PER_ADDRESS);
        if !known {
            limits.names.entry(username.to_owned()).or_default().strike(now, FREE_PER_NAME_ANYWHERE);
        }
        Ok(Attempt { key, lane })
    }

    /// The attempt was right: its name is cleared for that address, it no longer counts
    /// against the address, and the address is known from now on (its logins are judged in
    /// their own queue and never wait on others' guesses at the name).
    pub fn succeeded(&self, attempt: &Attempt, now: i64) {
        if let Ok(mut limits) = self.0.lock() {
            limits.pairs.remove(&attempt.key);
            if limits.known.len() >= MAX_TRUSTED && !limits.known.contains_key(&attempt.key.1) {
                let oldest = limits.known.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a);
                if let Some(oldest) = oldest {
                    limits.known.remove(&oldest);
                }
            }
            limits.known.insert(attempt.key.1, now);
            if let Some(address) = limits.addresses.get_mut(&attempt.key.1) {
                address.count = address.count.saturating_sub(1);
                if address.count < FREE_PER_ADDRESS {
                    address.next_allowed = 0;
                }
            }
        }
    }
}

/// The address a request came from (unspecified where the server does not say, as in unit
/// tests that call the router directly).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        Ok(ClientAddr(addr.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))))
    }
}

/// A logged-in user (session cookie or bearer token). Extracting it answers 401 otherwise,
/// and 403 to a recipient: recipients have their own routes under `/api/share`.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Session);

/// Owners and tenants: the people whose data this is.
pub const SUBJECTS: &[Role] = &[Role::Owner, Role::Tenant];

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // The route's gate found them already.
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(user.clone());
        }
        if parts.headers.contains_key(AUTHORIZATION) && CurrentRecipient::from_request_parts(parts, state).await.is_ok()
        {
            return Err(AppError::Forbidden("recipients may use only /api/share"));
        }
        if let Some(value) = parts.headers.get(AUTHORIZATION) {
            let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or(AppError::Unauthorized)?;
            return state
                .store
                .api_token(&token_digest(token.trim()), state.clock.now_ms())
                .await?
                .map(CurrentUser)
                .ok_or(AppError::Unauthorized);
        }
        let token = session_cookie(parts).ok_or(AppError::Unauthorized)?;
        state
            .store
            .session(&token_digest(&token), state.clock.now_ms())
            .await?
            .map(CurrentUser)
            .ok_or(AppError::Unauthorized)
    }
}

/// Checks a caller again, as their request was checked: for long-lived responses, which
/// must not outlive the rights they were opened with. `None` if the credentials no longer
/// hold (logged out, expired, removed).
pub async fn recheck(state: &AppState, headers: &axum::http::HeaderMap) -> Option<Session> {
    let (mut parts, ()) = axum::http::Request::new(()).into_parts();
    parts.headers = headers.clone();
    CurrentUser::from_request_parts(&mut parts, state).await.ok().map(|CurrentUser(user)| user)
}

/// Told whenever anyone's access may have changed (a logout, a guest removed, a tenancy
/// ended or shredded), so that long-lived responses check their caller again at once.
#[derive(Clone)]
pub struct AccessChanges(Arc<watch::Sender<u64>>);

impl Default for AccessChanges {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl AccessChanges {
    pub fn changed(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// A recipient, authenticated with its client credentials as HTTP Basic
/// (`client_id:client_secret`). Extracting it answers 401 otherwise.
#[derive(Debug, Clone)]
pub struct CurrentRecipient(pub RecipientRecord);

impl FromRequestParts<AppState> for CurrentRecipient {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(recipient) = parts.extensions.get::<CurrentRecipient>() {
            return Ok(recipient.clone());
        }
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(AppError::Unauthorized)?;
        let encoded = header.strip_prefix("Basic ").ok_or(AppError::Unauthorized)?;
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| AppError::Unauthorized)?;
        let decoded = Zeroizing::new(decoded);
        let text = std::str::from_utf8(&decoded).map_err(|_| AppError::Unauthorized)?;
        let (id, secret) = text.split_once(':').ok_or(AppError::Unauthorized)?;
        let recipient = state.store.recipient(id).await?.ok_or(AppError::Unauthorized)?;
        if bool::from(recipient.secret_hash.ct_eq(&token_digest(secret))) {
            Ok(Self(recipient))
        } else {
            Err(AppError::Unauthorized)
        }
    }
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// `Set-Cookie` for a new session. HttpOnly (no script reads it), SameSite=Strict (no
/// other site's page can make the browser send it) and, when the hub serves HTTPS, Secure
/// (never sent in clear).
pub fn session_set_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}; Max-Age={}", SESSION_TTL_MS / 1000)
}

pub fn session_clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict{secure}; Max-Age=0")
}

/// Deletes expired sessions now and then.
pub async fn prune_sessions_periodically(
    store: crate::store::Store,
    clock: Clock,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = clock.sleep_until(clock.now_ms() + 3_600_000) => {}
        }
        if let Err(error) = store.prune_sessions(clock.now_ms()).await {
            tracing::warn!(%error, "could not prune sessions");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_code_matches_loosely_and_is_replaced_after_failures() {
        let dir = tempfile::tempdir().unwrap();
        let code = SetupCode::create(dir.path()).unwrap();
        let text = code.code().to_owned();
        assert_eq!(std::fs::read_to_string(dir.path().join("setup-code")).unwrap().trim(), text);
        assert!(code.matches(&text.to_lowercase().replace('-', " ")));
        let setup = Setup::new(Some(code));
        for _ in 0..SETUP_ATTEMPTS - 1 {
            assert!(matches!(setup.check("WRONG-CODE-0000", dir.path()), SetupCheck::Wrong));
        }
        assert!(matches!(setup.check("WRONG-CODE-0000", dir.path()), SetupCheck::Replaced));
        assert!(matches!(setup.check(&text, dir.path()), SetupCheck::Wrong), "the old code no longer works");
        setup.finish();
        assert!(!setup.needed());
        assert!(!dir.path().join("setup-code").exists());
        assert!(matches!(setup.check(&text, dir.path()), SetupCheck::NotNeeded));
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 20));
    const STRANGER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 66));

    #[test]
    fn attempts_are_counted_when_they_start_and_wait_ever_longer() {
        let l = LoginLimiter::default();
        // A burst at one instant: the free ones start, the rest are refused unjudged.
        let started = (0..100).filter(|_| l.begin("owner", STRANGER, 0).is_ok()).count();
        assert_eq!(started, FREE_PER_NAME as usize);
        assert_eq!(l.begin("owner", STRANGER, 999).err(), Some(1));
        assert!(l.begin("owner", STRANGER, 1000).is_ok(), "after a second, one more");
        assert_eq!(l.begin("owner", STRANGER, 1001).err(), Some(1999), "then two seconds");
        assert!(l.begin("owner", HOME, 1001).is_ok(), "the owner at home is not held up");
        assert!(l.begin("owner", STRANGER, 1000 + LOGIN_WINDOW_MS + 1).is_ok(), "forgotten after a quiet window");
    }

    #[test]
    fn spraying_names_from_one_address_is_slowed_too() {
        let l = LoginLimiter::default();
        let started = (0..100).filter(|n| l.begin(&format!("user{n}"), STRANGER, 0).is_ok()).count();
        assert_eq!(started, FREE_PER_ADDRESS as usize);
        assert!(l.begin("owner", HOME, 0).is_ok());
        assert_eq!(l.begin("x", STRANGER, 0).err(), Some(1000));
    }

    #[test]
    fn a_success_clears_its_name_and_makes_the_address_known() {
        let l = LoginLimiter::default();
        let first = l.begin("owner", HOME, 0).unwrap();
        assert_eq!(first.lane, Lane::Suspect, "an address never logged in from waits with the rest");
        l.succeeded(&first, 0);
        let again = l.begin("owner", HOME, 1).unwrap();
        assert_eq!(again.lane, Lane::Clean, "a known address has its own queue");
        for _ in 0..FREE_PER_NAME - 2 {
            assert!(l.begin("owner", HOME, 1).is_ok());
        }
    }

    #[test]
    fn many_addresses_guessing_one_name_are_slowed_but_not_its_owner_at_home() {
        let l = LoginLimiter::default();
        let home = l.begin("owner", HOME, 0).unwrap();
        l.succeeded(&home, 0);
        let started = (0..200u32)
            .filter(|n| l.begin("owner", IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)), 1).is_ok())
            .count();
        // The owner's own first login, before home was known, counted as one of them.
        assert_eq!(started, FREE_PER_NAME_ANYWHERE as usize - 1);
        assert!(l.begin("owner", HOME, 1).is_ok(), "the owner, from home, is not held up");
    }

    #[test]
    fn the_limiter_forgets_instead_of_growing() {
        let l = LoginLimiter::default();
        for i in 0..MAX_TRACKED as u32 {
            let _ = l.begin(&format!("x{i}"), IpAddr::V4(std::net::Ipv4Addr::from(i)), 0);
        }
        assert!(l.begin("late", HOME, LOGIN_WINDOW_MS + 10).is_ok());
        assert_eq!(l.0.lock().unwrap().pairs.len(), 1, "forgotten pairs are dropped once the map is full");
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let pool = PasswordHasherPool::default();
        let hash = pool.hash(Zeroizing::new("correct horse".into())).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(pool.verify(Zeroizing::new("correct horse".into()), Some(hash.clone()), Lane::Clean).await.unwrap());
        assert!(!pool.verify(Zeroizing::new("wrong".into()), Some(hash), Lane::Suspect).await.unwrap());
        assert!(!pool.verify(Zeroizing::new("not a password".into()), None, Lane::Clean).await.unwrap());
    }
}
