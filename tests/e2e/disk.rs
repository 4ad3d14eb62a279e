//! A full card: the hub refuses readings with a reason (QoS 1 not acknowledged, so senders
//! keep them), says so to the owner, keeps serving what it stored, and takes readings again
//! by itself once there is room.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearth_tests::browser::Browser;
use hearth_tests::{TestHub, run_tool};
use serde_json::Value;

/// A size-limited tmpfs mounted at a new directory, unmounted when dropped. Needs root (as
/// the suite runs in CI).
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, megabytes: u32) -> anyhow::Result<Self> {
        let path = dir.join("card");
        std::fs::create_dir(&path)?;
        let size = format!("size={megabytes}m,mode=0700");
        let (ok, out) = run_tool("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", &path.to_string_lossy()])?;
        if !ok {
            bail!("mounting a {megabytes} MB tmpfs failed (the suite runs as root): {out}");
        }
        Ok(Self { path })
    }

    /// Fills it with `filler` until fewer than `leave` bytes are free.
    fn fill(&self, leave: u64) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler)?;
        let chunk = vec![0x5a; 256 * 1024];
        for _ in 0..4096 {
            if free(&self.path)? < leave {
                break;
            }
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        file.sync_all()?;
        Ok(filler)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = run_tool("umount", &["-l", &self.path.to_string_lossy()]);
    }
}

fn free(path: &Path) -> anyhow::Result<u64> {
    let (ok, out) = run_tool("stat", &["-f", "-c", "%a %S", &path.to_string_lossy()])?;
    let mut words = out.split_whitespace().map(str::parse::<u64>);
    match (ok, words.next(), words.next()) {
        (true, Some(Ok(blocks)), Some(Ok(size))) => Ok(blocks * size),
        _ => bail!("stat -f: {out}"),
    }
}

async fn storage(hub: &TestHub, owner: &reqwest::Client) -> anyhow::Result<Value> {
    Ok(owner.get(hub.url("/api/storage")).send().await?.error_for_status()?.json().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_card_refuses_readings_keeps_what_it_stored_and_recovers_by_itself() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let disk = SmallDisk::mount(dir.path(), 24)?;
    let mut config = hub::config::Config::for_test(&disk.path.join("data"));
    // Readings stop with 4 MB left: room for logins and settings.
    config.store.reserve_mb = 4;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let device = hub.add_device(&owner, "Meter").await?;
    for i in 0..5 {
        hub.publish((&device.0, &device.1), &format!("hearth/{}/power", device.0), format!("{}", 100 + i)).await?;
    }
    let status = storage(&hub, &owner).await?;
    assert!(status.get("refusing").is_none(), "{status}");
    assert!(status["free_bytes"].as_u64().is_some_and(|f| f > 4_000_000), "{status}");

    // The card fills up (another program, a log gone wild).
    let filler = disk.fill(3_000_000)?;
    let refused = hub.publish((&device.0, &device.1), &format!("hearth/{}/power", device.0), "999".into()).await;
    assert!(refused.is_err(), "a reading was acknowledged with the card full");
    let status = storage(&hub, &owner).await?;
    let reason = status["refusing"]["reason"].as_str().context("no reason given")?.to_owned();
    assert!(reason.contains("MB free"), "{status}");
    assert!(status["refusing"]["refused"].as_u64().is_some_and(|n| n >= 1), "{status}");

    // What was stored is still served, and people still log in.
    let stored: Vec<f64> =
        hub.readings(&owner, &device.0, "power").await?.iter().filter_map(|r| r["value"].as_f64()).collect();
    assert_eq!(stored, [100.0, 101.0, 102.0, 103.0, 104.0]);
    let again = hub.login().await?;
    assert!(again.get(hub.url("/api/devices")).send().await?.status().is_success());
    // The owner is told, above every page.
    let browser = Browser::start().await?;
    let b = &browser;
    b.owner_logs_in(&hub).await?;
    b.find(".card.device").await?;
    let banner = b.text("#card-full").await?;
    assert!(banner.contains("storage is full") && banner.contains("MB free"), "{banner}");
    b.audit("card-full").await?;

    // Room again: readings are taken within a minute, without a restart.
    std::fs::remove_file(&filler)?;
    let started = Instant::now();
    let mut taken = false;
    while started.elapsed() < Duration::from_secs(60) {
        if hub.publish((&device.0, &device.1), &format!("hearth/{}/power", device.0), "105".into()).await.is_ok() {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(taken, "readings still refused a minute after room returned");
    let status = storage(&hub, &owner).await?;
    assert!(status.get("refusing").is_none(), "{status}");
    let stored: Vec<f64> =
        hub.readings(&owner, &device.0, "power").await?.iter().filter_map(|r| r["value"].as_f64()).collect();
    assert_eq!(stored, [100.0, 101.0, 102.0, 103.0, 104.0, 105.0], "the refused reading was never stored");
    b.client.refresh().await?;
    b.find(".card.device").await?;
    let banners = b.client.execute("return document.querySelectorAll('#card-full').length", vec![]).await?;
    assert_eq!(banners, serde_json::json!(0), "the banner goes once readings are taken again");
    browser.close().await?;
    hub.stop().await?;
    drop(disk);
    Ok(())
}
