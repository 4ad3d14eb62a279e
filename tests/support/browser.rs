//! A real headless Chromium (Debian's `chromium` and `chromium-driver`) driven over
//! WebDriver. chromedriver runs in its own process group, killed on drop (also when a test
//! panics), with a fresh profile directory.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// The SHA-256 (base64) of the public key of the hub's CA, as OpenSSL computes it: what
/// `Browser::start_pinning` trusts.
pub fn ca_pin(hub: &crate::TestHub) -> anyhow::Result<String> {
    let ca = hub.ca_file();
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        crate::path_str(&ca)?
    );
    let (ok, out) = crate::run_tool("sh", &["-c", &script])?;
    anyhow::ensure!(ok, "computing the pin: {out}");
    Ok(out.trim().to_owned())
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_pinning(None).await
    }

    /// Starts Chromium trusting, besides the usual, certificates whose chain holds the
    /// public key with this SHA-256 (base64), as a hub's CA is pinned.
    pub async fn start_pinning(spki_sha256: Option<&str>) -> anyhow::Result<Self> {
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting chromedriver (apt-get install chromium chromium-driver)")?;
        let stdout = driver.stdout.take().context("chromedriver stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|p| p.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => port,
            Err(_) => {
                kill_group(&mut driver);
                bail!("chromedriver did not report its port");
            }
        };
        let profile = tempfile::tempdir()?;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1280,800",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        if let Some(pin) = spki_sha256 {
            args.push(format!("--ignore-certificate-errors-spki-list={pin}"));
        }
        let caps = json!({
            "pageLoadStrategy": "eager",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        });
        let caps = caps.as_object().cloned().context("capabilities")?;
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client =
            match ClientBuilder::new(connector).capabilities(caps).connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(client) => client,
                Err(e) => {
                    kill_group(&mut driver);
                    bail!("WebDriver session: {e}");
                }
            };
        Ok(Self { client, driver, _profile: profile })
    }

    /// Waits for an element by CSS selector. A wait cut short by the page navigating (a
    /// logout reloads it) is waited again, within the same 15 s.
    pub async fn find(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let found = self.client.wait().at_most(left).for_element(Locator::Css(css)).await;
            match found {
                Err(e) if e.to_string().contains("aborted by navigation") && !left.is_zero() => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                other => return self.found(css, other).await,
            }
        }
    }

    async fn found(
        &self,
        css: &str,
        found: Result<fantoccini::elements::Element, fantoccini::error::CmdError>,
    ) -> anyhow::Result<fantoccini::elements::Element> {
        match found {
            Ok(element) => Ok(element),
            Err(e) => {
                // Say what the page showed instead: that is what a person would look at.
                let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
                let body = self.client.source().await.unwrap_or_default();
                let tail: String = body.chars().rev().take(1500).collect::<Vec<_>>().into_iter().rev().collect();
                bail!("no element {css} ({e}) at {url}; the page ends: {tail}")
            }
        }
    }

    /// Types into the element matching `css`.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.find(css).await?.send_keys(text).await.with_context(|| format!("typing into {css}"))
    }

    /// Chooses the option with `value` in the `<select>` matching `css`.
    pub async fn choose(&self, css: &str, value: &str) -> anyhow::Result<()> {
        self.find(css).await?.select_by_value(value).await.with_context(|| format!("choosing {value} in {css}"))
    }

    /// Clicks the element matching `css`. A page that re-renders between finding and
    /// clicking (a list refreshed from the hub) makes the element stale: find it again.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        for _ in 0..20 {
            match self.find(css).await?.click().await {
                Err(e) if e.to_string().contains("stale element") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other.with_context(|| format!("clicking {css}")),
            }
        }
        bail!("{css} kept going stale")
    }

    /// The text of the element matching `css`, found again if the page re-rendered it in
    /// between (as `click` does).
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        for _ in 0..20 {
            match self.find(css).await?.text().await {
                Err(e) if e.to_string().contains("stale element") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other.with_context(|| format!("reading {css}")),
            }
        }
        bail!("{css} kept going stale")
    }

    /// Waits until the page's text contains `needle`; returns that text. A page that is
    /// being replaced (a navigation, a reload after logging in) can make the body stale
    /// between finding and reading it, or leave none for a moment: that is "not yet", not a
    /// failure.
    pub async fn wait_for_text(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // Between two documents (a navigation, the reload after logging in) there may be
            // no body at all for a moment: that is "not yet" too.
            let text = match self.client.find(Locator::Css("body")).await {
                Ok(body) => match body.text().await {
                    Err(e) if e.to_string().contains("stale element") => String::new(),
                    other => other?,
                },
                Err(e) if e.to_string().contains("no such element") => String::new(),
                Err(e) => return Err(e.into()),
            };
            if text.contains(needle) {
                return Ok(text);
            }
            if std::time::Instant::now() > deadline {
                bail!("page never showed {needle:?}; it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot under target/screenshots/ for people to look at.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.png")), png)?;
        Ok(())
    }

    /// Sends a Chrome DevTools Protocol command to the page (through chromedriver's
    /// `goog/cdp/execute`): network emulation, colour schemes, blocked URLs.
    pub async fn cdp(&self, cmd: &str, params: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let command = Cdp { cmd: cmd.to_owned(), params };
        self.client.issue_cmd(command).await.with_context(|| format!("CDP {cmd}"))
    }

    /// The page's width as laid out and the width of what it holds: more means the page
    /// scrolls sideways.
    pub async fn widths(&self) -> anyhow::Result<(u64, u64)> {
        let widths = self
            .client
            .execute("return [document.documentElement.clientWidth, document.documentElement.scrollWidth]", vec![])
            .await?;
        let width = |i: usize| widths.get(i).and_then(serde_json::Value::as_u64).context("a width");
        Ok((width(0)?, width(1)?))
    }

    pub async fn close(mut self) -> anyhow::Result<()> {
        let client = self.client.clone();
        client.close().await?;
        kill_group(&mut self.driver);
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// A DevTools command, as chromedriver relays it.
#[derive(Debug)]
struct Cdp {
    cmd: String,
    params: serde_json::Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/goog/cdp/execute", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({ "cmd": self.cmd, "params": self.params }).to_string()))
    }
}

/// Kills chromedriver and the browsers it started (its process group).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
    let _ = child.wait();
}
