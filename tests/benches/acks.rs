//! QoS 1 acknowledgements per second, the hub against Debian's Mosquitto, in one run.
//!
//! Mosquitto (persistence off) acknowledges from memory; the hub only once a reading is
//! committed to disk. Both get the same load on loopback: 1, 8 and 64 clients with 100
//! messages in flight each, then one client sending one message at a time (waiting for each
//! PUBACK, as a Shelly does). Prints acknowledgements per second, the PUBLISH-to-PUBACK
//! delay (p50, p99, max) and the ratio hub / Mosquitto for each.
//!
//! `cargo bench -p hearth-tests --bench acks -- [SECONDS_PER_RUN]` (default 5). Bounded:
//! each run stops after its seconds or 200,000 messages per client, whichever comes first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio_util::sync::CancellationToken;

const MAX_PER_CLIENT: usize = 200_000;
const CLIENTS: [usize; 3] = [1, 8, 64];

struct Run {
    acked: usize,
    seconds: f64,
    delays: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.acked as f64 / self.seconds
    }

    fn pct(&self, p: f64) -> f64 {
        let i = ((self.delays.len() as f64 * p) as usize).min(self.delays.len().saturating_sub(1));
        self.delays.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what:>10}: {:>8.0} acks/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            self.rate(),
            self.pct(0.5),
            self.pct(0.99),
            self.delays.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        )
    }
}

fn main() -> anyhow::Result<()> {
    let seconds = std::env::args().skip(1).find_map(|a| a.parse::<u64>().ok()).unwrap_or(5);
    tokio::runtime::Runtime::new()?.block_on(run(Duration::from_secs(seconds)))
}

async fn run(each: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The hub with its production commit policy.
    let mut config = hub::config::Config::for_test(&dir.path().join("data"));
    config.store = hub::config::StoreConfig::default();
    let store = hub::open_store(&config, hub::clock::Clock::system().now_ms()).await?;
    let most = CLIENTS.iter().copied().max().unwrap_or(1);
    let mut devices = Vec::new();
    for i in 0..most {
        let creds = hub::devices::add(&store, &format!("bench {i}"), 0).await?;
        devices.push((creds.id.clone(), creds.secret.to_string()));
    }
    store.close().await;
    let listeners = hub::Listeners::bind(&config).await?;
    let hub_addr = listeners.addresses()?.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT listener"))?;
    let shutdown = CancellationToken::new();
    let hub = tokio::spawn(hub::run(config, listeners, hub::clock::Clock::system(), shutdown.clone()));

    // Mosquitto with the same users, each writing under hearth/<id>/.
    let users: Vec<(&str, &str)> = devices.iter().map(|(id, secret)| (id.as_str(), secret.as_str())).collect();
    let mosquitto = hearth_tests::Mosquitto::start(dir.path(), &users, "reader")?;
    let mosquitto_addr: SocketAddr = ([127, 0, 0, 1], mosquitto.port).into();

    println!("QoS 1 acknowledgements: hub (after commit) against Mosquitto (from memory), {each:?} per run");
    let mut ratios = Vec::new();
    for clients in CLIENTS {
        println!("{clients} client(s), 100 in flight each");
        let theirs = load(mosquitto_addr, &devices[..clients], 100, each).await?;
        let ours = load(hub_addr, &devices[..clients], 100, each).await?;
        println!("{}", theirs.line("mosquitto"));
        println!("{}", ours.line("hub"));
        println!("{:>10}: {:.3}", "ratio", ours.rate() / theirs.rate());
        ratios.push((format!("{clients} x 100 in flight"), ours.rate() / theirs.rate()));
    }
    println!("1 client, one message at a time");
    let theirs = load(mosquitto_addr, &devices[..1], 1, each).await?;
    let ours = load(hub_addr, &devices[..1], 1, each).await?;
    println!("{}", theirs.line("mosquitto"));
    println!("{}", ours.line("hub"));
    println!("{:>10}: {:.3}", "ratio", ours.rate() / theirs.rate());
    ratios.push(("one at a time".to_owned(), ours.rate() / theirs.rate()));
    println!("summary (hub / Mosquitto):");
    for (what, ratio) in ratios {
        println!("  {what:<22} {ratio:.3}");
    }
    println!("  one at a time, hub     {:.0} acks/s", ours.rate());
    shutdown.cancel();
    hub.await??;
    drop(mosquitto);
    Ok(())
}

/// `devices` publish QoS 1 for `each`, `inflight` at a time: their acknowledgements. All
/// are connected before the clock starts.
async fn load(addr: SocketAddr, devices: &[(String, String)], inflight: u16, each: Duration) -> anyhow::Result<Run> {
    let mut connected = Vec::new();
    for (id, secret) in devices {
        connected.push((id.clone(), connect(addr, id, secret, inflight).await?));
    }
    let started = Instant::now();
    let until = started + each;
    let tasks: Vec<_> =
        connected.into_iter().map(|(id, (client, events))| tokio::spawn(publish(id, client, events, until))).collect();
    let mut run = Run { acked: 0, seconds: 0.0, delays: Vec::new() };
    for task in tasks {
        let delays = task.await??;
        run.acked += delays.len();
        run.delays.extend(delays);
    }
    run.seconds = started.elapsed().as_secs_f64();
    run.delays.sort_unstable();
    Ok(run)
}

/// A client of `addr` logged in as `id`, with `inflight` messages in flight at most.
async fn connect(addr: SocketAddr, id: &str, secret: &str, inflight: u16) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let mut options = MqttOptions::new(format!("acks-{id}"), addr.ip().to_string(), addr.port());
    options.set_credentials(id, secret);
    options.set_inflight(inflight);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 1_000);
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

/// One client publishing until `until`: each PUBLISH-to-PUBACK delay.
async fn publish(
    id: String,
    client: AsyncClient,
    mut events: EventLoop,
    until: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let topic = format!("hearth/{id}/power");
    let stop = CancellationToken::new();
    let publisher = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            for i in 0..MAX_PER_CLIENT {
                let value = format!("{}.{}", 100 + i % 900, i % 10);
                tokio::select! {
                    () = stop.cancelled() => break,
                    sent = client.publish(topic.as_str(), QoS::AtLeastOnce, false, value) => if sent.is_err() { break },
                }
            }
        })
    };
    let mut sent: HashMap<u16, Instant> = HashMap::new();
    let mut delays = Vec::new();
    // Acknowledgements of what was sent before `until` are still awaited, for up to 10 s.
    let last = until + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        if now >= until {
            stop.cancel();
            if sent.is_empty() || now >= last {
                break;
            }
        }
        match tokio::time::timeout_at(last.into(), events.poll()).await {
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
    publisher.abort();
    let _ = client.try_disconnect();
    Ok(delays)
}
