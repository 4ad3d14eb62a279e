//! Test support: boots the real hub in-process on loopback port 0 with a fresh data
//! directory, and drives it with real clients (HTTP, MQTT, Debian's Mosquitto tools).

pub mod browser;
pub mod discovered;
pub mod home;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use hub::clock::TestClock;
pub use hub::config::Config;

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hub running in this process.
pub struct TestHub {
    /// Plain HTTP: the UI and API, or with HTTPS on, only redirects and the CA certificate.
    pub http: SocketAddr,
    /// HTTPS, when `http.tls` is on.
    pub https: Option<SocketAddr>,
    /// Plain MQTT.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over TLS.
    pub mqtts: Option<SocketAddr>,
    pub coap_dtls: Option<SocketAddr>,
    pub coap_plain: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub config: Config,
    /// The hub's clock: it runs with the system clock, and tests move it forward instead
    /// of sleeping.
    pub clock: TestClock,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestHub {
    /// Starts a hub with `Config::for_test` in a new data directory inside `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(Config::for_test(&dir.join("data"))).await
    }

    pub async fn start_with(config: Config) -> anyhow::Result<Self> {
        Self::start_with_clock(config, TestClock::new()).await
    }

    /// Starts a hub on `clock`: a restart keeps the time its tests moved on.
    pub async fn start_with_clock(config: Config, clock: TestClock) -> anyhow::Result<Self> {
        // The hub's log in the test output: errors only, or as RUST_LOG says.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let listeners = hub::Listeners::bind(&config).await?;
        let addrs = listeners.addresses()?;
        let shutdown = CancellationToken::new();
        let mut task = tokio::spawn(hub::run(config.clone(), listeners, clock.clock(), shutdown.clone()));
        let client = reqwest::Client::new();
        let url = format!("http://{}/api/health", addrs.http);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if task.is_finished() {
                // The hub stopped by itself: report why.
                (&mut task).await??;
                bail!("the hub stopped during start-up");
            }
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the hub did not answer /api/health within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let hub = Self {
            http: addrs.http,
            https: addrs.https,
            mqtt: addrs.mqtt,
            mqtts: addrs.mqtts,
            coap_dtls: addrs.coap_dtls,
            coap_plain: addrs.coap_plain,
            data_dir: config.data_dir.clone(),
            config,
            clock,
            shutdown,
            task: Some(task),
        };
        Ok(hub)
    }

    /// The hub's time (ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The start of the next period `width` ms long (an hour, a day), counted from the Unix
    /// epoch: the clock is read once, so a boundary passed between two reads cannot give a
    /// time inside a period.
    pub fn next_boundary(&self, width: i64) -> i64 {
        let now = self.now_ms();
        now - now.rem_euclid(width) + width
    }

    /// Where the API answers: over HTTPS when it is on.
    pub fn url(&self, path: &str) -> String {
        match self.https {
            Some(https) => format!("https://{https}{path}"),
            None => format!("http://{}{path}", self.http),
        }
    }

    /// The hub's CA certificate (PEM), as it keeps it in its data directory.
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.ca_file())?)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("tls").join("ca.pem")
    }

    /// A client with a cookie store that trusts the hub's CA (and nothing else) when the
    /// hub serves HTTPS.
    pub fn client_builder(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        let mut builder = reqwest::Client::builder().cookie_store(true);
        if self.https.is_some() {
            let ca = reqwest::Certificate::from_pem(self.ca_pem()?.as_bytes())?;
            builder = builder.tls_built_in_root_certs(false).add_root_certificate(ca).https_only(true);
        }
        Ok(builder)
    }

    /// Stops the hub as SIGTERM would, and waits until it has committed and closed.
    pub async fn stop(mut self) -> anyhow::Result<Config> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task).await.context("hub did not stop")???;
        }
        Ok(self.config.clone())
    }

    /// The setup code the hub printed and wrote to its data directory.
    pub fn setup_code(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.data_dir.join("setup-code"))?.trim().to_owned())
    }

    /// Completes first-run setup as `owner` and returns a client holding the session cookie.
    pub async fn owner(&self) -> anyhow::Result<reqwest::Client> {
        let client = self.client_builder()?.build()?;
        let resp = client
            .post(self.url("/api/setup"))
            .json(&json!({ "code": self.setup_code()?, "username": "owner", "password": OWNER_PASSWORD }))
            .send()
            .await?;
        if resp.status() != 201 {
            bail!("setup failed: {} {}", resp.status(), resp.text().await?);
        }
        Ok(client)
    }

    /// Logs in as the owner created by [`TestHub::owner`] (after a restart, say).
    pub async fn login(&self) -> anyhow::Result<reqwest::Client> {
        let client = self.client_builder()?.build()?;
        let resp = client
            .post(self.url("/api/login"))
            .json(&json!({ "username": "owner", "password": OWNER_PASSWORD }))
            .send()
            .await?;
        if resp.status() != 200 {
            bail!("login failed: {}", resp.status());
        }
        Ok(client)
    }

    /// Adds a device through the API; returns (id, secret).
    pub async fn add_device(&self, client: &reqwest::Client, name: &str) -> anyhow::Result<(String, String)> {
        let resp = client.post(self.url("/api/devices")).json(&json!({ "name": name })).send().await?;
        if resp.status() != 201 {
            bail!("adding a device failed: {}", resp.status());
        }
        let body: Value = resp.json().await?;
        let field = |k: &str| body[k].as_str().map(str::to_owned).with_context(|| format!("no {k} in {body}"));
        Ok((field("id")?, field("secret")?))
    }

    /// The owner invites a tenant for `[start, end)` (defaults: now, open-ended); the tenant
    /// accepts as `username`. Returns the tenant's client and the tenancy id.
    pub async fn tenant(
        &self,
        owner: &reqwest::Client,
        username: &str,
        period: Value,
    ) -> anyhow::Result<(reqwest::Client, i64)> {
        let resp = owner.post(self.url("/api/tenancies")).json(&period).send().await?;
        if resp.status() != 201 {
            bail!("creating a tenancy failed: {} {}", resp.status(), resp.text().await?);
        }
        let invite: Value = resp.json().await?;
        let code = invite["code"].as_str().context("no code")?;
        let client = self.accept_invite(code, username).await?;
        Ok((client, invite["tenancy"].as_i64().context("no tenancy id")?))
    }

    /// Accepts an invite as `username` with [`TENANT_PASSWORD`]; returns the logged-in client.
    pub async fn accept_invite(&self, code: &str, username: &str) -> anyhow::Result<reqwest::Client> {
        let client = self.client_builder()?.build()?;
        let body = json!({ "code": code, "username": username, "password": TENANT_PASSWORD });
        let resp = client.post(self.url("/api/invites/accept")).json(&body).send().await?;
        if resp.status() != 201 {
            bail!("accepting the invite failed: {} {}", resp.status(), resp.text().await?);
        }
        Ok(client)
    }

    /// Registers a recipient as `by`; returns its (client id, client secret).
    pub async fn recipient(&self, by: &reqwest::Client, name: &str, kind: &str) -> anyhow::Result<(String, String)> {
        let resp = by.post(self.url("/api/recipients")).json(&json!({ "name": name, "kind": kind })).send().await?;
        if resp.status() != 201 {
            bail!("registering a recipient failed: {}", resp.status());
        }
        let body: Value = resp.json().await?;
        let field = |k: &str| body[k].as_str().map(str::to_owned).with_context(|| format!("no {k} in {body}"));
        Ok((field("client_id")?, field("client_secret")?))
    }

    /// Publishes one reading as a device over the embedded MQTT server and waits for its
    /// PUBACK (sent after the commit).
    pub async fn publish(&self, device: (&str, &str), topic: &str, payload: String) -> anyhow::Result<()> {
        let addr = self.mqtt.context("no MQTT server")?;
        let (client, mut events) = mqtt_connect(addr, &format!("{}-pub", device.0), device.0, device.1).await?;
        client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await?;
        wait_puback(&mut events, None).await?;
        client.disconnect().await?;
        Ok(())
    }

    /// Raw readings of one metric (all time).
    pub async fn readings(&self, client: &reqwest::Client, device: &str, metric: &str) -> anyhow::Result<Vec<Value>> {
        let resp = client
            .get(self.url(&format!("/api/devices/{device}/metrics/{metric}/readings?from=0&to=99999999999999")))
            .send()
            .await?;
        match resp.status().as_u16() {
            200 => {
                let body = resp.json::<Value>().await?;
                body["readings"].as_array().cloned().ok_or_else(|| anyhow::anyhow!("readings: no list in {body}"))
            }
            // What the caller may not see is not found: for it, there are no readings.
            404 => Ok(Vec::new()),
            s => bail!("readings: HTTP {s}"),
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub const OWNER_PASSWORD: &str = "a long enough password";
pub const TENANT_PASSWORD: &str = "the tenant's own password";

/// Connects an MQTT client as a device and waits for the CONNACK. Errs if refused.
pub async fn mqtt_connect(
    addr: SocketAddr,
    client_id: &str,
    user: &str,
    secret: &str,
) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_credentials(user, secret);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_max_packet_size(1 << 20, 1 << 20);
    connected(options).await
}

/// Connects an MQTT client over TLS, trusting only `ca_pem`, and waits for the CONNACK.
pub async fn mqtt_connect_tls(
    addr: SocketAddr,
    ca_pem: &str,
    client_id: &str,
    user: &str,
    secret: &str,
) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_credentials(user, secret);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(
        tls,
    ))));
    connected(options).await
}

/// Waits for the CONNACK of a client with `options`. Errs if refused.
async fn connected(options: MqttOptions) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let (client, mut events) = AsyncClient::new(options, 64);
    let connack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack),
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            }
        }
    })
    .await
    .context("no CONNACK")??;
    if connack.code != rumqttc::ConnectReturnCode::Success {
        bail!("refused: {:?}", connack.code);
    }
    Ok((client, events))
}

/// A device listening for its commands: every message it receives, as (topic, payload).
pub struct Listener {
    _client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    pub async fn start(addr: SocketAddr, device: &str, secret: &str, filter: &str) -> anyhow::Result<Self> {
        let (client, mut events) = mqtt_connect(addr, &format!("{device}-listener"), device, secret).await?;
        client.subscribe(filter, QoS::AtMostOnce).await?;
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(Event::Incoming(Packet::SubAck(_))) = events.poll().await {
                    return;
                }
            }
        })
        .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    let _ = tx.send((p.topic.clone(), String::from_utf8_lossy(&p.payload).into_owned()));
                }
            }
        });
        Ok(Self { _client: client, rx, task })
    }

    pub async fn next(&mut self) -> anyhow::Result<(String, String)> {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no command within 10 s"))?
            .ok_or_else(|| anyhow::anyhow!("listener closed"))
    }

    /// Nothing more arrives within `d` (at most 200 ms in a test: prefer
    /// [`Listener::nothing_before_marker`]).
    pub async fn quiet(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.recv()).await.is_err()
    }

    /// Proves that nothing reached this listener before now, without waiting anything out:
    /// the owner commands `device`'s `marker` metric (`device` being the one listened
    /// for), and that must be the next thing heard, since commands to a device's sessions
    /// go out in the order they are sent.
    pub async fn nothing_before_marker(
        &mut self,
        hub: &TestHub,
        owner: &reqwest::Client,
        device: &str,
        n: u32,
    ) -> anyhow::Result<()> {
        let sent = owner.post(hub.url(&format!("/api/devices/{device}/command")));
        let sent = sent.json(&json!({ "metric": "marker", "value": n })).send().await?;
        anyhow::ensure!(sent.status().is_success(), "the marker command: {}", sent.text().await?);
        let heard = self.next().await?;
        anyhow::ensure!(
            heard == (format!("hearth/{device}/set/marker"), n.to_string()),
            "heard {heard:?} before marker {n}"
        );
        Ok(())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `events` until the PUBACK for packet id `pkid` (or any PUBACK if `None`).
pub async fn wait_puback(events: &mut EventLoop, pkid: Option<u16>) -> anyhow::Result<u16> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) if pkid.is_none_or(|p| p == ack.pkid) => return Ok(ack.pkid),
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            }
        }
    })
    .await
    .context("no PUBACK")?
}

/// Polls `events` until the server closes the connection; errs if it stays open 5 s.
pub async fn wait_closed(events: &mut EventLoop) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(5), async { while events.poll().await.is_ok() {} })
        .await
        .context("the connection stayed open")
}

/// Runs a command to completion with a time limit; returns (success, stdout + stderr).
pub fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program} (is it installed? see .ci/run)"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{program} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// A free loopback port, for programs (Mosquitto) that cannot be told to use port 0.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The hub's settings for an external broker on loopback `port`, where it logs in as `hub`
/// with `hub-password` (as [`Mosquitto::start`]'s users give it).
pub fn external_broker(port: u16) -> anyhow::Result<hub::config::ExternalMqtt> {
    let text = format!(
        "host = '127.0.0.1'\nport = {port}\nusername = 'hub'\npassword = 'hub-password'\nclient_id = 'hearth-test'\n"
    );
    Ok(toml::from_str(&text)?)
}

/// A Mosquitto broker on loopback, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
}

impl Mosquitto {
    /// Starts `mosquitto` with a password file of `users` and the ACL Hearth documents:
    /// each user writes only under `hearth/<username>/`, and `reader` reads `hearth/#`.
    pub fn start(dir: &Path, users: &[(&str, &str)], reader: &str) -> anyhow::Result<Self> {
        Self::start_with(dir, users, reader, MosquittoOptions::default())
    }

    /// As [`Mosquitto::start`], with `options`.
    pub fn start_with(
        dir: &Path,
        users: &[(&str, &str)],
        reader: &str,
        options: MosquittoOptions,
    ) -> anyhow::Result<Self> {
        let passwd = dir.join("mosquitto.passwd");
        std::fs::write(&passwd, "")?;
        for (user, pass) in users {
            let (ok, out) = run_tool("mosquitto_passwd", &["-b", path_str(&passwd)?, user, pass])?;
            if !ok {
                bail!("mosquitto_passwd: {out}");
            }
        }
        let acl = dir.join("mosquitto.acl");
        std::fs::write(
            &acl,
            format!(
                "user {reader}\ntopic read hearth/#\n{}\npattern write hearth/%u/#\npattern write hearth/%u\n",
                options.acl
            ),
        )?;
        let tls_port = options.tls.as_ref().map(|t| t.port);
        let port = match options.port {
            Some(p) => p,
            // Not the port just chosen for TLS, which the system may hand out again.
            None => {
                (0..10).map(|_| free_port()).find(|p| p.as_ref().ok() != tls_port.as_ref()).unwrap_or_else(free_port)?
            }
        };
        let persistence = if options.persist {
            // As root, Mosquitto would switch to its own user, which cannot write here.
            format!("user root\npersistence true\npersistence_location {}/\n", path_str(dir)?)
        } else {
            "persistence false\n".to_owned()
        };
        let tls = match &options.tls {
            Some(t) => format!(
                "user root\nlistener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                t.port,
                path_str(&t.ca)?,
                path_str(&t.cert)?,
                path_str(&t.key)?
            ),
            None => String::new(),
        };
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n{persistence}{tls}",
                path_str(&passwd)?,
                path_str(&acl)?
            ),
        )?;
        let log = dir.join("mosquitto.log");
        let mut child = Command::new("/usr/sbin/mosquitto")
            .args(["-c", path_str(&conf)?])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting mosquitto (apt-get install mosquitto)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let said = || std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(status) = child.try_wait()? {
                bail!("mosquitto stopped ({status}) before listening on {port}: {}", said());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("mosquitto did not start listening on {port}: {}", said());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { port, child })
    }

    /// Stops the broker as its service would (SIGTERM), so it saves what it persists.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let (ok, out) = run_tool("kill", &["-TERM", &self.child.id().to_string()])?;
        anyhow::ensure!(ok, "kill: {out}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("mosquitto did not stop");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// How to start Mosquitto beyond its defaults.
#[derive(Debug, Default)]
pub struct MosquittoOptions {
    /// Listen here (a free port if `None`).
    pub port: Option<u16>,
    /// Save sessions and queued messages in its directory when it stops, restore them at start.
    pub persist: bool,
    /// A second listener, with TLS.
    pub tls: Option<TlsListener>,
    /// More ACL lines, right after the reader's `topic read hearth/#`: more `topic` lines
    /// for the reader, then `user` blocks of their own.
    pub acl: String,
}

#[derive(Debug)]
pub struct TlsListener {
    pub port: u16,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority and a certificate for `localhost`/127.0.0.1 signed by it, made
/// with Debian's `openssl` in `dir`. Returns (CA certificate, server certificate, key).
pub fn test_certificates(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let p = |f: &str| dir.join(f);
    std::fs::write(p("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")?;
    let steps: [Vec<String>; 3] = [
        [
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Hearth test CA",
            "-keyout",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([path_str(&p("ca.key"))?.to_owned(), "-out".into(), path_str(&p("ca.pem"))?.to_owned()])
        .collect(),
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost", "-keyout"]
            .iter()
            .map(|s| s.to_string())
            .chain([path_str(&p("server.key"))?.to_owned(), "-out".into(), path_str(&p("server.csr"))?.to_owned()])
            .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial", "-in"]
            .iter()
            .map(|s| s.to_string())
            .chain(
                [
                    path_str(&p("server.csr"))?,
                    "-CA",
                    path_str(&p("ca.pem"))?,
                    "-CAkey",
                    path_str(&p("ca.key"))?,
                    "-extfile",
                    path_str(&p("ext.cnf"))?,
                    "-out",
                    path_str(&p("server.pem"))?,
                ]
                .map(str::to_owned),
            )
            .collect(),
    ];
    for args in steps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = run_tool("openssl", &args)?;
        anyhow::ensure!(ok, "openssl {}: {out}", args.join(" "));
    }
    Ok((p("ca.pem"), p("server.pem"), p("server.key")))
}

/// A free loopback UDP port, for programs (libcoap's server) that cannot use port 0.
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A program the test started, killed on drop.
pub struct Peer(Child);

impl Peer {
    pub fn spawn(program: &str, args: &[&str]) -> anyhow::Result<Self> {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        Ok(Self(child))
    }

    /// Starts a peer that prints `marker` on its standard output once it serves, and waits
    /// for that line (a Python peer can take seconds to import its library on a loaded
    /// machine). If the peer exits first, the error carries what it said on stderr.
    pub async fn ready(program: &str, args: &[&str], marker: &str, within: Duration) -> anyhow::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let out = Output::watch(child.stdout.take())?;
        let err = Output::watch_err(child.stderr.take())?;
        let mut peer = Self(child);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if out.text().contains(marker) {
                return Ok(peer);
            }
            if let Some(status) = peer.0.try_wait()? {
                anyhow::bail!("{program} exited ({status}) before it served: {}", err.text());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{program} did not say {marker:?} within {within:?}: {}",
                err.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 temp path")
}

/// A child's standard output, collected by a thread as it arrives.
pub struct Output {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Output {
    pub fn watch(stdout: Option<std::process::ChildStdout>) -> anyhow::Result<Self> {
        Self::collect(stdout.ok_or_else(|| anyhow::anyhow!("no stdout"))?)
    }

    pub fn watch_err(stderr: Option<std::process::ChildStderr>) -> anyhow::Result<Self> {
        Self::collect(stderr.ok_or_else(|| anyhow::anyhow!("no stderr"))?)
    }

    fn collect(mut stdout: impl std::io::Read + Send + 'static) -> anyhow::Result<Self> {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut t) = sink.lock() {
                    t.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Self { text, reader })
    }

    pub fn text(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Everything, once the child has closed its output.
    pub fn finish(self) -> String {
        let Self { text, reader } = self;
        let _ = reader.join();
        text.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Connects as `device` with client id `client` and the given clean-session flag; returns
/// the client, its event loop and whether the server said it kept a session.
pub async fn mqtt_session(
    addr: SocketAddr,
    (device, secret): (&str, &str),
    client: &str,
    clean: bool,
) -> anyhow::Result<(AsyncClient, EventLoop, bool)> {
    let mut options = MqttOptions::new(client, addr.ip().to_string(), addr.port());
    options.set_credentials(device, secret);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(clean);
    let (client, mut events) = AsyncClient::new(options, 16);
    let present = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == rumqttc::ConnectReturnCode::Success => {
                    return Ok(ack.session_present);
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => anyhow::bail!("refused: {:?}", ack.code),
                Ok(_) => {}
                Err(e) => anyhow::bail!("{e}"),
            }
        }
    })
    .await??;
    Ok((client, events, present))
}

/// Subscribes at QoS 1, waits for the SUBACK, then disconnects cleanly.
pub async fn subscribe_and_leave(client: AsyncClient, mut events: EventLoop, filter: &str) -> anyhow::Result<()> {
    client.subscribe(filter, QoS::AtLeastOnce).await?;
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(ack))) = events.poll().await {
                anyhow::ensure!(
                    ack.return_codes == [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)],
                    "{ack:?}"
                );
                return Ok(());
            }
        }
    })
    .await??;
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while events.poll().await.is_ok() {} }).await;
    Ok(())
}
