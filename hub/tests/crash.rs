//! The real `hub` binary, killed with SIGKILL while a device publishes: every reading it
//! acknowledged must be in the database afterwards, and the hub must start again.
//! (This lives beside the binary, not in tests/, because only here Cargo hands a test the
//! path of the `hub` executable.)

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hub::config::Config;
use hub::reading::Value;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

fn hub_command(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hub"));
    cmd.env("HUB_DATA_DIR", data)
        .env("HUB_HTTP_LISTEN", "127.0.0.1:0")
        .env("HUB_HTTPS_LISTEN", "127.0.0.1:0")
        .env("HUB_MQTT_LISTEN", "127.0.0.1:0")
        .env("HUB_MQTTS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// Starts the hub and reads its log until it says where MQTT listens.
fn start(data: &std::path::Path) -> anyhow::Result<(Child, std::net::SocketAddr)> {
    // Its errors (why it stopped, if it does) show in the test output.
    let mut child = hub_command(data).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("embedded MQTT server listening")
                && !line.contains("over TLS")
                && let Some(addr) = line.split("addr=").nth(1).and_then(|a| a.split_whitespace().next()?.parse().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => Ok((child, addr)),
        Err(_) => {
            let _ = child.kill();
            anyhow::bail!("the hub did not report its MQTT address")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_reading() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");

    // The CLI adds a device and prints its credentials.
    let out = hub_command(&data).args(["device", "add", "Meter"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout)?;
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned());
    let (id, secret) = (field("device id:").unwrap_or_default(), field("secret:").unwrap_or_default());
    assert_eq!((id.len(), secret.len()), (8, 32), "{text}");

    let (mut hub, addr) = start(&data)?;
    let mut options = MqttOptions::new("meter", addr.ip().to_string(), addr.port());
    options.set_credentials(id.clone(), secret.clone());
    options.set_inflight(20);
    let (client, mut events) = AsyncClient::new(options, 100);
    let topic = format!("hearth/{id}/energy");
    let publisher = tokio::spawn(async move {
        for i in 0..100_000u32 {
            if client.publish(topic.as_str(), QoS::AtLeastOnce, false, i.to_string()).await.is_err() {
                break;
            }
        }
    });
    // Publishes go out in order: the k-th outgoing PUBLISH carries value k.
    let mut next_value = 0u32;
    let mut in_flight: VecDeque<(u16, u32)> = VecDeque::new();
    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < 500 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await? {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                in_flight.push_back((pkid, next_value));
                next_value += 1;
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(pos) = in_flight.iter().position(|(p, _)| *p == ack.pkid)
                    && let Some((_, value)) = in_flight.remove(pos)
                {
                    acked.insert(value);
                }
            }
            Ok(_) => {}
            Err(e) => anyhow::bail!("MQTT: {e}"),
        }
    }
    // Mid-stream, with readings in flight: SIGKILL.
    hub.kill()?;
    hub.wait()?;
    publisher.abort();
    assert!(acked.len() >= 500, "only {} readings acknowledged", acked.len());
    assert!(!in_flight.is_empty(), "the kill should land with readings still in flight");

    // Every acknowledged reading is in the database.
    let config = Config { data_dir: data.clone(), ..Config::default() };
    let store = hub::open_store(&config, 0).await?;
    let (stored, _) = store
        .readings(&id, "energy", (0, i64::MAX), usize::MAX, hub::store::readings::Keys::All)
        .await?
        .unwrap_or_default();
    let stored: BTreeSet<u32> = stored
        .iter()
        .filter_map(|(_, v)| match v {
            Value::Number(n) => Some(*n as u32),
            _ => None,
        })
        .collect();
    let missing: Vec<&u32> = acked.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged readings lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    store.close().await;

    // And the hub starts again on the same data.
    let (mut hub, _) = start(&data)?;
    hub.kill()?;
    hub.wait()?;
    Ok(())
}
