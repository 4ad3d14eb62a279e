//! End-to-end ingest load: MQTT clients publish N readings at QoS 1 to the embedded server
//! of a hub running in this process; reports readings/s stored and the delay from sending a
//! PUBLISH to receiving its PUBACK (which the hub sends only after the commit), p50/p99/max.
//!
//! `cargo bench -p hub --bench ingest -- [READINGS] [CLIENTS]` (defaults 100,000 and 8).
//! Bounded: every client stops after its share of readings or after 120 s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio_util::sync::CancellationToken;

const TIME_LIMIT: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let readings = args.first().copied().unwrap_or(100_000);
    let clients = args.get(1).copied().unwrap_or(8).max(1);
    tokio::runtime::Runtime::new()?.block_on(run(readings, clients))
}

async fn run(readings: usize, clients: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The production commit policy (decision 0029), loopback port 0.
    let mut config = hub::config::Config::for_test(&dir.path().join("data"));
    config.store = hub::config::StoreConfig::default();
    let store = hub::open_store(&config, hub::clock::Clock::system().now_ms()).await?;
    let mut devices = Vec::new();
    for i in 0..clients {
        devices.push(hub::devices::add(&store, &format!("bench {i}"), 0).await?);
    }
    store.close().await;

    let listeners = hub::Listeners::bind(&config).await?;
    let addr = listeners.addresses()?.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT listener"))?;
    let shutdown = CancellationToken::new();
    let hub = tokio::spawn(hub::run(config, listeners, hub::clock::Clock::system(), shutdown.clone()));

    let per_client = readings / clients;
    println!(
        "ingest benchmark: {} readings over MQTT QoS 1 from {clients} clients, production commit policy",
        per_client * clients
    );
    // All log in before the clock starts, one after another: the hub keeps only a few
    // connections from one address waiting for their login at once.
    let mut connected = Vec::new();
    for creds in devices {
        connected.push((creds.id.clone(), connect(addr, &creds.id, &creds.secret).await?));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (id, (client, events)) in connected {
        tasks.push(tokio::spawn(publish(id, client, events, per_client)));
    }
    let mut delays = Vec::with_capacity(readings);
    let mut acked = 0;
    for task in tasks {
        let (d, n) = task.await??;
        delays.extend(d);
        acked += n;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    hub.await??;

    delays.sort_unstable();
    let pct = |p: f64| {
        delays
            .get(((delays.len() as f64 * p) as usize).min(delays.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "stored and acknowledged: {acked} readings in {:.2} s = {:.0} readings/s",
        elapsed.as_secs_f64(),
        acked as f64 / elapsed.as_secs_f64()
    );
    println!(
        "publish -> PUBACK (= committed): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        delays.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    if acked < per_client * clients {
        anyhow::bail!("only {acked} of {} readings were acknowledged within {TIME_LIMIT:?}", per_client * clients);
    }
    Ok(())
}

/// A client of `addr` logged in as `id`, 100 messages in flight at most.
async fn connect(addr: std::net::SocketAddr, id: &str, secret: &str) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let mut options = MqttOptions::new(format!("bench-{id}"), addr.ip().to_string(), addr.port());
    options.set_credentials(id, secret);
    options.set_inflight(100);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline.into(), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, events)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("client {id} could not connect: {e}"),
            Err(_) => anyhow::bail!("client {id}: no CONNACK within 10 s"),
        }
    }
}

/// Publishes `n` readings as fast as the in-flight window (100) allows; returns each one's
/// PUBLISH-sent to PUBACK-received delay.
async fn publish(
    id: String,
    client: AsyncClient,
    mut events: EventLoop,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let topic = format!("hearth/{id}/power");
    let publisher = tokio::spawn(async move {
        for i in 0..n {
            let value = format!("{}.{}", 100 + i % 900, i % 10);
            if client.publish(topic.as_str(), QoS::AtLeastOnce, false, value).await.is_err() {
                break;
            }
        }
        client
    });
    let deadline = Instant::now() + TIME_LIMIT;
    let mut sent: HashMap<u16, Instant> = HashMap::new();
    let mut delays = Vec::with_capacity(n);
    while delays.len() < n && Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), events.poll()).await {
            Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                sent.insert(pkid, Instant::now());
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                if let Some(t) = sent.remove(&ack.pkid) {
                    delays.push(t.elapsed());
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("client {id}: {e}"),
            Err(_) => break,
        }
    }
    let client = publisher.await?;
    let _ = client.disconnect().await;
    let acked = delays.len();
    Ok((delays, acked))
}
