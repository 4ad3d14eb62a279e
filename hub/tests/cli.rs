//! The `hub verify-log` command against a real data directory: intact, then tampered.

use std::process::Command;

use hearth_model::consent::LogKind;
use hub::config::Config;
use hub::consent::log::{self, Checkpoint};
use hub::store::NewLogEntry;

fn verify(data: &std::path::Path) -> anyhow::Result<(bool, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_hub")).arg("--data-dir").arg(data).arg("verify-log").output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// Appends one read per count to the access log, as a recipient's reads would.
async fn log_reads(store: &hub::store::Store, counts: &[i64]) -> anyhow::Result<()> {
    for &rows in counts {
        let entry = NewLogEntry {
            ts: 1_000 + rows,
            kind: LogKind::Read,
            subject_id: 1,
            recipient_id: "rc_test",
            grant_id: Some("g_test"),
            detail: serde_json::json!({ "rows": rows }),
        };
        store.log_access(&entry).await?;
    }
    Ok(())
}

#[tokio::test]
async fn verify_log_finds_an_edited_entry() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = hub::open_store(&Config::for_test(&data), 0).await?;
    log_reads(&store, &[3, 5]).await?;
    let (ok, text) = verify(&data)?;
    assert!(ok && text.contains("2 entries verified"), "{text}");

    sqlx::query("DROP TRIGGER access_log_no_update").execute(store.pool()).await?;
    sqlx::query("UPDATE access_log SET detail = '{\"rows\":0}' WHERE seq = 1").execute(store.pool()).await?;
    store.close().await;
    let (ok, text) = verify(&data)?;
    assert!(!ok && text.contains("broken at entry 1"), "{text}");
    Ok(())
}

/// Whoever has the database file can rewrite an entry and re-hash the chain after it: the
/// chain check alone passes again. A checkpoint the subject kept from before finds it.
#[tokio::test]
async fn a_kept_checkpoint_finds_a_rehashed_log() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = hub::open_store(&Config::for_test(&data), 0).await?;
    log_reads(&store, &[3, 5, 8]).await?;
    let signer = store.receipt_signer(0).await?;
    let (seq, hash) = store.access_log_head().await?.ok_or_else(|| anyhow::anyhow!("empty log"))?;
    let kept = dir.path().join("checkpoint.jws");
    std::fs::write(&kept, Checkpoint { seq, hash, at: 2_000 }.sign(&signer))?;
    let with_checkpoint = || -> anyhow::Result<(bool, String)> {
        let out = Command::new(env!("CARGO_BIN_EXE_hub"))
            .arg("--data-dir")
            .arg(&data)
            .arg("verify-log")
            .arg("--checkpoint")
            .arg(&kept)
            .output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    };
    let (ok, text) = with_checkpoint()?;
    assert!(ok && text.contains("matches the checkpoint (entry 3)"), "{text}");

    // Entry 2 says 0 rows were read, and every hash from it on is recomputed.
    sqlx::query("DROP TRIGGER access_log_no_update").execute(store.pool()).await?;
    let mut prev = log::GENESIS.to_vec();
    for mut row in store.access_log(None).await? {
        if row.entry.seq == 2 {
            row.entry.detail = "{\"rows\":0}".into();
        }
        let hash = log::chain(&prev, &row.entry).to_vec();
        sqlx::query("UPDATE access_log SET detail = ?, prev_hash = ?, hash = ? WHERE seq = ?")
            .bind(&row.entry.detail)
            .bind(&prev)
            .bind(&hash)
            .bind(row.entry.seq)
            .execute(store.pool())
            .await?;
        prev = hash;
    }
    store.close().await;
    let (ok, text) = verify(&data)?;
    assert!(ok, "the re-hashed chain passes the chain check alone: {text}");
    let (ok, text) = with_checkpoint()?;
    assert!(!ok && text.contains("rewritten: entry 3"), "{text}");
    Ok(())
}
