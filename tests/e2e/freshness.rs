//! How the page knows what is fresh: an idle live stream says `tick` (with a data line, or
//! a browser would drop it), and how often a value usually comes is one household's own:
//! it starts again when the readings change hands (a tenancy begins or ends).

use std::time::Duration;

use hearth_tests::TestHub;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_live_stream_ticks_with_a_data_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let mut live = owner.get(hub.url("/api/live")).send().await?;
    assert_eq!(live.status(), 200);
    // A tick comes after 10 s of nothing else; wait for it, within 15 s.
    let mut seen = String::new();
    let ticked = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = live.chunk().await? {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: tick\ndata: tick\n") {
                return anyhow::Ok(true);
            }
        }
        anyhow::Ok(false)
    })
    .await;
    assert!(matches!(ticked, Ok(Ok(true))), "no tick with a data line in 15 s; the stream said {seen:?}");
    Ok(())
}

async fn every(client: &reqwest::Client, hub: &TestHub, device: &str) -> anyhow::Result<Value> {
    let list: Value = client.get(hub.url("/api/devices")).send().await?.json().await?;
    let found = list.as_array().and_then(|l| l.iter().find(|d| d["id"] == device)).cloned().unwrap_or_default();
    Ok(found["metrics"][0]["every"].clone())
}

/// A tenant's meter reports every 70 s. When the tenancy ends, the owner's first reading
/// does not carry that rhythm over (how often a motion sensor or a plug reports is the
/// household's life): the average starts again from the owner's own gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_s_rhythm_is_never_the_next_one_s() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = TestHub::start(dir.path()).await?;
    let owner = hub.owner().await?;
    let (meter, secret) = hub.add_device(&owner, "Meter").await?;
    let dev = (meter.as_str(), secret.as_str());
    let topic = format!("hearth/{meter}/energy");
    let (tenant, tenancy) = hub.tenant(&owner, "tessa", json!({})).await?;
    let tenancies: Value = owner.get(hub.url("/api/tenancies")).send().await?.json().await?;
    let start = tenancies[0]["start"].as_i64().unwrap_or_default();
    for i in 0..3 {
        let ts = start + 10 + i * 70_000;
        hub.clock.advance_to(ts + 10);
        hub.publish(dev, &topic, json!({ "value": i, "ts": ts }).to_string()).await?;
    }
    assert_eq!(every(&tenant, &hub, &meter).await?, json!(70_000), "the tenant sees their meter's rhythm");

    let end = owner.post(hub.url(&format!("/api/tenancies/{tenancy}/end"))).json(&json!({})).send().await?;
    assert_eq!(end.status(), 200);
    let end_at = end.json::<Value>().await?["end"].as_i64().unwrap_or_default();
    hub.clock.advance_to(end_at + 50);
    hub.publish(dev, &topic, json!({ "value": 10, "ts": end_at + 10 }).to_string()).await?;
    assert_eq!(every(&owner, &hub, &meter).await?, Value::Null, "nothing of the tenant's rhythm");
    hub.clock.advance_to(end_at + 30_050);
    hub.publish(dev, &topic, json!({ "value": 11, "ts": end_at + 30_010 }).to_string()).await?;
    assert_eq!(every(&owner, &hub, &meter).await?, json!(30_000), "the owner's own, from their own gaps");
    Ok(())
}
