//! The `hub verify-log` command against a real data directory: intact, then tampered.

use std::process::Command;

use hearth_model::consent::LogKind;
use hub::config::Config;
use hub::store::NewLogEntry;

fn verify(data: &std::path::Path) -> anyhow::Result<(bool, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_hub")).arg("--data-dir").arg(data).arg("verify-log").output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

#[tokio::test]
async fn verify_log_finds_an_edited_entry() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = hub::open_store(&Config::for_test(&data)).await?;
    for rows in [3, 5] {
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
    let (ok, text) = verify(&data)?;
    assert!(ok && text.contains("2 entries verified"), "{text}");

    sqlx::query("DROP TRIGGER access_log_no_update").execute(store.pool()).await?;
    sqlx::query("UPDATE access_log SET detail = '{\"rows\":0}' WHERE seq = 1").execute(store.pool()).await?;
    store.close().await;
    let (ok, text) = verify(&data)?;
    assert!(!ok && text.contains("broken at entry 1"), "{text}");
    Ok(())
}
