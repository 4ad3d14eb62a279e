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

/// The browser tests need both of the UI's builds (docs/decisions/0028): the home in
/// `dist/`, the pages that manage it in `dist/manage/`. A plain `trunk build` makes only
/// the first, and empties `dist/` of the second.
pub fn ui_is_built() -> anyhow::Result<()> {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    for page in [dist.join("index.html"), dist.join(hearth_model::pages::MANAGE_DIR).join("index.html")] {
        anyhow::ensure!(page.exists(), "{} is not built: run `app/build` (tests/run does)", page.display());
    }
    Ok(())
}

/// Starts chromedriver on a port of its choosing and reads the port from what it prints.
/// On a loaded machine it has been seen to say nothing in 20 s: each try waits up to 30 s,
/// a silent or dead driver is killed and started again, three tries in all, and the error
/// says what each try printed.
fn start_driver() -> anyhow::Result<(Child, u16)> {
    let mut said = Vec::new();
    for _ in 0..3 {
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
                let port = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|p| p.trim_end_matches('.').trim().parse::<u16>().ok());
                if tx.send((line, port)).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut lines = Vec::new();
        let port = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((_, Some(port))) => break Some(port),
                Ok((line, None)) => lines.push(line),
                // Timed out, or the driver closed its output (it exited).
                Err(_) => break None,
            }
        };
        match port {
            Some(port) => return Ok((driver, port)),
            None => {
                let status = driver.try_wait().ok().flatten();
                kill_group(&mut driver);
                said.push(format!("{status:?}: {lines:?}"));
            }
        }
    }
    bail!("chromedriver did not report its port in three tries: {said:?}")
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

    /// Opens the hub's page and logs in as the owner (the login form, as a person would).
    pub async fn owner_logs_in(&self, hub: &crate::TestHub) -> anyhow::Result<()> {
        self.client.goto(&hub.url("/")).await?;
        self.fill("#login-username", "owner").await?;
        self.fill("#login-password", crate::OWNER_PASSWORD).await?;
        self.click("#login-submit").await
    }

    /// Starts Chromium trusting, besides the usual, certificates whose chain holds the
    /// public key with this SHA-256 (base64), as a hub's CA is pinned.
    pub async fn start_pinning(spki_sha256: Option<&str>) -> anyhow::Result<Self> {
        let (mut driver, port) = start_driver()?;
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
                Err(e) if went_stale(&e) => {
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
                Err(e) if went_stale(&e) => {
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
                    Err(e) if went_stale(&e) => String::new(),
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

    /// Runs axe-core (npm, installed by `.ci/install-tools test`) on the page as it is, in
    /// the light and then the dark colour scheme, with the WCAG 2.0 and 2.1 A and AA rules;
    /// fails listing every violation. Leaves the page in the light scheme.
    pub async fn audit(&self, page: &str) -> anyhow::Result<()> {
        let loaded = self.client.execute("return typeof axe !== 'undefined'", vec![]).await?;
        if loaded != json!(true) {
            let path =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/node_modules/axe-core/axe.min.js");
            let axe = std::fs::read_to_string(&path)
                .with_context(|| format!("{} (.ci/install-tools test installs it)", path.display()))?;
            self.client.execute(&axe, vec![]).await.context("loading axe-core into the page")?;
        }
        let mut problems = Vec::new();
        for scheme in ["light", "dark"] {
            let media = json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] });
            self.cdp("Emulation.setEmulatedMedia", media).await?;
            let dark = self.client.execute("return matchMedia('(prefers-color-scheme: dark)').matches", vec![]).await?;
            anyhow::ensure!(dark == json!(scheme == "dark"), "{page}: the {scheme} scheme was not applied");
            let found = self
                .client
                .execute_async(
                    "const done = arguments[arguments.length - 1]; \
                     axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }) \
                       .then(r => done(r.violations.map(v => `${v.impact} ${v.id}: ${v.help} (${v.nodes.length}: ` + \
                          v.nodes.slice(0, 4).map(n => n.target.join(' ') + (n.failureSummary ? ' / ' + \
                          n.failureSummary.split('\\n').slice(1, 2).join('') : '')).join('; ') + ')'))) \
                       .catch(e => done(['axe failed: ' + e]));",
                    vec![],
                )
                .await?;
            for line in found.as_array().into_iter().flatten() {
                problems.push(format!("{scheme}: {}", line.as_str().unwrap_or_default()));
            }
        }
        self.cdp("Emulation.setEmulatedMedia", json!({ "features": [] })).await?;
        anyhow::ensure!(problems.is_empty(), "{page}: axe-core finds\n{}", problems.join("\n"));
        Ok(())
    }

    /// A phone's checks of the page as it is: at 360 px wide nothing runs off the side; at
    /// 390x844 the header is one line (64 px at most) and every button, field, list and fold
    /// is at least 44 px tall (buttons 44 px wide too). Leaves the window at `restore`.
    pub async fn phone_checks(&self, page: &str, restore: (u32, u32)) -> anyhow::Result<()> {
        self.client.set_window_size(360, 740).await?;
        let (width, content) = self.widths().await?;
        if content > width {
            // Name the innermost elements that run past the edge: that is what to fix.
            let culprits = self
                .client
                .execute(
                    "const w = document.documentElement.clientWidth; \
                     const over = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1); \
                     return over.filter(e => !over.some(o => o !== e && e.contains(o))).slice(0, 4) \
                       .map(e => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className ? '.' + e.className : ''} \
                         to ${Math.round(e.getBoundingClientRect().right)} px: ${(e.textContent || '').trim().slice(0, 40)}`);",
                    vec![],
                )
                .await?;
            anyhow::bail!("{page}: {content} px of content on a {width} px wide phone: {culprits}");
        }
        self.client.set_window_size(390, 844).await?;
        let header = self
            .client
            .execute(
                "const h = document.querySelector('header'); return h ? h.getBoundingClientRect().height : 0",
                vec![],
            )
            .await?;
        let header = header.as_f64().unwrap_or_default();
        anyhow::ensure!(header <= 64.0, "{page}: the header is {header} px tall on a phone");
        let small = self
            .client
            .execute(
                "return [...document.querySelectorAll('button, input:not([type=checkbox]):not([type=radio]):not([type=hidden]), \
                   select, summary, header nav a')] \
                   .filter(e => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden') \
                   .map(e => [e, e.getBoundingClientRect()]) \
                   .filter(([e, r]) => r.height < 43.5 || (e.tagName === 'BUTTON' && r.width < 43.5)) \
                   .map(([e, r]) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className ? '.' + e.className : ''} \
                     \"${(e.textContent || e.value || '').trim().slice(0, 20)}\" ${Math.round(r.width)}x${Math.round(r.height)}`)",
                vec![],
            )
            .await?;
        let small: Vec<&str> = small.as_array().into_iter().flatten().filter_map(serde_json::Value::as_str).collect();
        anyhow::ensure!(small.is_empty(), "{page}: touch targets under 44 px: {}", small.join(", "));
        self.client.set_window_size(restore.0, restore.1).await?;
        Ok(())
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

/// Whether `e` says the element found a moment ago is no longer in the page: the page
/// re-rendered or was replaced in between. Chromium says so in two ways: WebDriver's "stale
/// element reference", or, when the whole document was swapped between finding and
/// reading, an inspector error that the node "does not belong to the document".
fn went_stale(e: &fantoccini::error::CmdError) -> bool {
    let message = e.to_string();
    message.contains("stale element") || message.contains("does not belong to the document")
}
