//! Automation latency: a device publishes a reading, a rule fires, and the command reaches
//! another device's subscription, all over the embedded MQTT server of a hub running in
//! this process, while background clients publish 1,000 readings/s at QoS 1.
//!
//! Each trigger is measured twice in the same trial: the time until the sensor's own
//! subscription receives its publish back (the broker alone: the baseline), and the time
//! until the actuator receives the rule's command (broker + automation engine).
//!
//! `cargo bench -p hub --bench automation -- [TRIGGERS] [BACKGROUND_PER_S]` (defaults 2,000
//! and 1,000). Bounded: every loop stops after its count or after 120 s.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TIME_LIMIT: Duration = Duration::from_secs(120);
const BACKGROUND_CLIENTS: usize = 8;
/// Pause between two triggers, so each one is measured alone, and the rule stays under
/// the hub's bound of 100 runs per second per rule (which stops loops through devices).
const GAP: Duration = Duration::from_millis(15);

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let triggers = args.first().copied().unwrap_or(2_000).max(1);
    let background = args.get(1).copied().unwrap_or(1_000);
    tokio::runtime::Runtime::new()?.block_on(run(triggers, background))
}

async fn run(triggers: usize, background: usize) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .try_init();
    let dir = tempfile::tempdir()?;
    // The production commit policy (decision 0029), loopback port 0.
    let mut config = hub::config::Config::for_test(&dir.path().join("data"));
    config.store = hub::config::StoreConfig::default();
    let store = hub::open_store(&config, hub::clock::Clock::system().now_ms()).await?;
    let owner = store.create_first_owner("bench", "unused", 0).await?.ok_or_else(|| anyhow::anyhow!("no owner"))?;
    let sensor = hub::devices::add(&store, "sensor", 0).await?;
    let actuator = hub::devices::add(&store, "actuator", 0).await?;
    let mut loaders = Vec::new();
    for i in 0..BACKGROUND_CLIENTS {
        loaders.push(hub::devices::add(&store, &format!("load {i}"), 0).await?);
    }
    let rule = json!({
        "name": "Button switches the light",
        "mode": "parallel",
        "triggers": [{ "type": "reading", "device": sensor.id, "metric": "button" }],
        "actions": [{ "type": "mqtt", "device": actuator.id, "metric": "power", "value": "toggle" }]
    });
    store.create_rule(owner, rule.to_string().as_bytes(), true, 0).await?;
    store.close().await;

    let listeners = hub::Listeners::bind(&config).await?;
    let addr = listeners.addresses()?.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT listener"))?;
    let shutdown = CancellationToken::new();
    let hub = tokio::spawn(hub::run(config, listeners, hub::clock::Clock::system(), shutdown.clone()));

    // The actuator listens for commands, the sensor for its own publishes (the baseline).
    let (act_client, act_rx) =
        subscriber(addr, &actuator.id, actuator.secret.as_str(), &format!("hearth/{}/set/#", actuator.id)).await?;
    let (sensor_client, echo_rx) =
        subscriber(addr, &sensor.id, sensor.secret.as_str(), &format!("hearth/{}/button", sensor.id)).await?;

    // Background load, paced per client.
    let stop_load = CancellationToken::new();
    let per_client = background as f64 / BACKGROUND_CLIENTS as f64;
    let mut load_tasks = Vec::new();
    for creds in loaders {
        load_tasks.push(tokio::spawn(load(
            addr,
            creds.id.clone(),
            creds.secret.to_string(),
            per_client,
            stop_load.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "automation benchmark: {triggers} triggers over MQTT, background {background} readings/s from \
         {BACKGROUND_CLIENTS} clients at QoS 1, production commit policy"
    );
    let (mut commands, mut echoes) = (Vec::with_capacity(triggers), Vec::with_capacity(triggers));
    let (mut act_rx, mut echo_rx) = (act_rx, echo_rx);
    let topic = format!("hearth/{}/button", sensor.id);
    let deadline = Instant::now() + TIME_LIMIT;
    let mut lost = 0;
    let started = Instant::now();
    for i in 0..triggers {
        if Instant::now() > deadline {
            break;
        }
        let sent = Instant::now();
        sensor_client.publish(topic.as_str(), QoS::AtMostOnce, false, (i % 2 == 0).to_string()).await?;
        match (next(&mut echo_rx).await, next(&mut act_rx).await) {
            (Some(echo), Some(command)) => {
                echoes.push(echo.saturating_duration_since(sent));
                commands.push(command.saturating_duration_since(sent));
            }
            (echo, command) => {
                eprintln!("trigger {i}: echo {}, command {}", echo.is_some(), command.is_some());
                lost += 1;
                // Drain whatever half arrived so the next trial starts clean.
                while echo_rx.try_recv().is_ok() {}
                while act_rx.try_recv().is_ok() {}
            }
        }
        tokio::time::sleep(GAP).await;
    }
    let measured_for = started.elapsed();
    stop_load.cancel();
    let mut background_acked = 0;
    for t in load_tasks {
        background_acked += t.await??;
    }
    drop((act_client, sensor_client));
    shutdown.cancel();
    hub.await??;

    let stats = |d: &mut Vec<Duration>| {
        d.sort_unstable();
        let pct = |p: f64| d.get(((d.len() as f64 * p) as usize).min(d.len().saturating_sub(1))).copied();
        let ms = |x: Option<Duration>| x.unwrap_or_default().as_secs_f64() * 1e3;
        (ms(pct(0.50)), ms(pct(0.99)), ms(d.last().copied()))
    };
    let (c50, c99, cmax) = stats(&mut commands);
    let (e50, e99, emax) = stats(&mut echoes);
    println!("                                  p50        p99        max");
    println!("publish -> rule's command   {c50:8.3} ms {c99:8.3} ms {cmax:8.3} ms");
    println!("publish -> broker echo      {e50:8.3} ms {e99:8.3} ms {emax:8.3} ms   (baseline)");
    println!("ratio (command / echo)      {:8.2}    {:8.2}", c50 / e50.max(1e-9), c99 / e99.max(1e-9));
    println!(
        "background: {background_acked} readings acknowledged in {:.1} s = {:.0} readings/s; {} of {triggers} triggers measured, {lost} lost",
        measured_for.as_secs_f64(),
        background_acked as f64 / measured_for.as_secs_f64(),
        commands.len()
    );
    println!("target p99 < 5 ms: {}", if c99 < 5.0 { "met" } else { "NOT met" });
    anyhow::ensure!(lost == 0, "{lost} triggers got no command within 1 s");
    Ok(())
}

/// The next arrival, or `None` after a second.
async fn next(rx: &mut mpsc::UnboundedReceiver<Instant>) -> Option<Instant> {
    tokio::time::timeout(Duration::from_secs(1), rx.recv()).await.ok().flatten()
}

/// Connects as a device and subscribes; the receiver gets the arrival time of each message.
async fn subscriber(
    addr: std::net::SocketAddr,
    id: &str,
    secret: &str,
    filter: &str,
) -> anyhow::Result<(AsyncClient, mpsc::UnboundedReceiver<Instant>)> {
    let mut options = MqttOptions::new(format!("bench-{id}"), addr.ip().to_string(), addr.port());
    options.set_credentials(id, secret);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 64);
    client.subscribe(filter, QoS::AtMostOnce).await?;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            }
        }
    })
    .await??;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = event {
                let _ = tx.send(Instant::now());
            }
        }
    });
    Ok((client, rx))
}

/// Publishes at `per_second` readings/s at QoS 1 until `stop` (or the time limit); returns
/// how many were acknowledged.
async fn load(
    addr: std::net::SocketAddr,
    id: String,
    secret: String,
    per_second: f64,
    stop: CancellationToken,
) -> anyhow::Result<usize> {
    let mut options = MqttOptions::new(format!("load-{id}"), addr.ip().to_string(), addr.port());
    options.set_credentials(id.clone(), secret);
    options.set_inflight(200);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 400);
    let topic = format!("hearth/{id}/power");
    let publisher = tokio::spawn(async move {
        if per_second <= 0.0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let deadline = Instant::now() + TIME_LIMIT;
        let mut i = 0u64;
        while !stop.is_cancelled() && Instant::now() < deadline {
            tick.tick().await;
            i += 1;
            let value = format!("{}.{}", 100 + i % 900, i % 10);
            if client.publish(topic.as_str(), QoS::AtLeastOnce, false, value).await.is_err() {
                break;
            }
        }
        let _ = client.disconnect().await;
    });
    let mut acked = 0;
    let deadline = Instant::now() + TIME_LIMIT + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline.into(), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
    }
    publisher.await?;
    Ok(acked)
}
