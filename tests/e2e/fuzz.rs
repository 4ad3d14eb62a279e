//! Fuzzing on stable Rust, with a fixed budget: seeds from `tests/fuzz/` (and valid
//! packets made here) are mutated (bytes flipped, cut, repeated, spliced, interesting
//! values written in) and fed to payload decoding, rule import (JSON and YAML), the
//! conventions that read what devices announce (Home Assistant discovery, value
//! templates, Zigbee2MQTT device lists, and the native conventions' topics), the
//! embedded MQTT server and the CoAP server, the last two over real sockets. Nothing may
//! panic (a panic hook counts every panic in the process, the hub's tasks included), hang
//! or stop the hub serving a real device afterwards.
//!
//! Each run uses a new seed, printed; `HEARTH_FUZZ_SEED=<n>` replays one. A failing input
//! is printed in hex.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hearth_tests::{Config, TestHub, mqtt_connect, wait_puback};
use hub::conventions::hearth::readings as readings_from_publish;
use hub::ingest::decode::{decode_metric, decode_object};
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Budget per target: this many inputs, or this long, whichever ends first (about 25 s
/// in all on a 2-core machine).
const INPUTS: usize = 200_000;
const DATAGRAMS: usize = 50_000;
const CONNECTIONS: usize = 2_000;
const BUDGET: Duration = Duration::from_secs(15);
/// The most one input may take.
const SLOW: Duration = Duration::from_secs(1);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts, from now on, every panic on the runtime's worker threads, where the hub's tasks
/// run (a test's own assertions run on its test thread and are not counted). The default
/// hook still prints each.
fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("tokio-")) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// xorshift64*: small, fast, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        // A new seed each run: the wall clock's milliseconds.
        let seed = std::env::var("HEARTH_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| hub::clock::Clock::system().now_ms().unsigned_abs());
        println!("fuzz seed {seed} (HEARTH_FUZZ_SEED={seed} replays it)");
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A mutation of one of `seeds` (a few edits at once).
    fn mutate(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        const INTERESTING: &[&[u8]] = &[
            b"\x00",
            b"\xff",
            b"\x7f",
            b"\x80",
            b"\xff\xff\xff\x7f",
            b"-1",
            b"1e999",
            b"NaN",
            b"\"",
            b"{",
            b"}",
            b"[",
            b"]",
            b"\\u0000",
            b"9223372036854775807",
            b"-9223372036854775808",
            b"&a",
            b"*a",
            b"\n",
        ];
        let mut data = seeds[self.below(seeds.len())].clone();
        for _ in 0..1 + self.below(4) {
            let at = self.below(data.len() + 1);
            match self.below(7) {
                0 if !data.is_empty() => {
                    let i = at.min(data.len() - 1);
                    data[i] ^= 1 << self.below(8);
                }
                1 if !data.is_empty() => {
                    let i = at.min(data.len() - 1);
                    data[i] = self.next() as u8;
                }
                2 => data.truncate(at),
                3 => {
                    let piece = INTERESTING[self.below(INTERESTING.len())];
                    data.splice(at..at, piece.iter().copied());
                }
                4 if !data.is_empty() => {
                    // Repeat a slice (lengths and nesting grow).
                    let from = self.below(data.len());
                    let to = (from + 1 + self.below(16)).min(data.len());
                    let piece: Vec<u8> = data[from..to].to_vec();
                    for _ in 0..1 + self.below(8) {
                        data.splice(at..at, piece.iter().copied());
                    }
                }
                5 => {
                    let other = &seeds[self.below(seeds.len())];
                    let from = self.below(other.len() + 1);
                    data.splice(at..at, other[from..].iter().copied());
                }
                _ if at < data.len() => {
                    data.remove(at);
                }
                _ => {}
            }
        }
        data.truncate(64 * 1024);
        data
    }
}

fn corpus(dir: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(&path)? {
        seeds.push(std::fs::read(entry?.path())?);
    }
    seeds.sort();
    anyhow::ensure!(!seeds.is_empty(), "no seeds in {}", path.display());
    Ok(seeds)
}

/// Runs `target` on mutations of `seeds` within the budget; fails on a panic or a slow
/// input, naming it. Returns how many inputs ran.
fn fuzz(name: &str, seeds: &[Vec<u8>], mut target: impl FnMut(&[u8])) -> anyhow::Result<usize> {
    let mut rng = Rng::new();
    let started = Instant::now();
    let mut ran = 0;
    // The seeds themselves first.
    let inputs = seeds.iter().cloned().chain(std::iter::from_fn(|| Some(rng.mutate(seeds))));
    for input in inputs.take(INPUTS) {
        if started.elapsed() > BUDGET {
            break;
        }
        let t = Instant::now();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        let took = t.elapsed();
        if caught.is_err() {
            anyhow::bail!("{name} panicked on {}", hex(&input));
        }
        anyhow::ensure!(took < SLOW, "{name} took {took:?} on {}", hex(&input));
        ran += 1;
    }
    println!("{name}: {ran} inputs in {:?}, no panic, none slower than {SLOW:?}", started.elapsed());
    Ok(ran)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(4096).map(|b| format!("{b:02x}")).collect()
}

#[test]
fn payload_decoding_survives_mutated_payloads() -> anyhow::Result<()> {
    let seeds = corpus("payloads")?;
    let now = 1_780_000_000_000;
    fuzz("decode", &seeds, |payload| {
        let _ = decode_object("dev1", payload, now);
        let _ = decode_metric("dev1", "temperature", payload, now);
        let _ = readings_from_publish("dev1", "hearth/dev1", payload, now);
        let _ = readings_from_publish("dev1", "hearth/dev1/power", payload, now);
        // The topic comes from the network too.
        let topic = String::from_utf8_lossy(payload);
        let _ = readings_from_publish("dev1", &topic, b"1", now);
    })?;
    Ok(())
}

/// A seed of the form `topic\npayload`, split.
fn split_seed(input: &[u8]) -> (String, &[u8]) {
    let at = input.iter().position(|b| *b == b'\n').unwrap_or(input.len());
    (String::from_utf8_lossy(&input[..at]).into_owned(), input.get(at + 1..).unwrap_or_default())
}

/// Home Assistant discovery configs (single and device-based) and the native conventions'
/// messages, topic and payload mutated: every convention reads them, and what a config
/// announces is turned into what Hearth keeps.
#[test]
fn discovery_survives_mutated_configs() -> anyhow::Result<()> {
    use hub::conventions::{Convention, Message, ecosystem, home_assistant};
    let seeds = corpus("discovery")?;
    fuzz("discovery", &seeds, |input| {
        let (topic, payload) = split_seed(input);
        if let Ok(home_assistant::Discovery::Entity(entity)) = home_assistant::parse("homeassistant", &topic, payload) {
            let _ = entity.announce();
        }
        let message = Message::new(&topic, payload);
        for convention in Convention::ALL {
            let _ = ecosystem(*convention).read(&message);
        }
    })?;
    Ok(())
}

/// Value templates and the messages they read, both mutated.
#[test]
fn templates_survive_mutated_templates() -> anyhow::Result<()> {
    use hub::conventions::home_assistant::template::Template;
    let seeds = corpus("templates")?;
    fuzz("templates", &seeds, |input| {
        let (template, message) = split_seed(input);
        if let Ok(template) = Template::parse(&template) {
            let _ = template.render(&String::from_utf8_lossy(message));
        }
    })?;
    Ok(())
}

/// Zigbee2MQTT device lists (its own test's list, and one built from eight real device
/// definitions), mutated: read as a bridge's list, and each device's state read as its
/// description says.
#[test]
fn zigbee2mqtt_device_lists_survive_mutation() -> anyhow::Result<()> {
    use hub::conventions::{Convention, Description, Ecosystem, Heard, Message, zigbee2mqtt};
    let seeds = corpus("zigbee2mqtt")?;
    fuzz("zigbee2mqtt device list", &seeds, |list| {
        let _ = zigbee2mqtt::devices(list);
        if let Heard::Listed { devices, .. } = zigbee2mqtt::Zigbee2mqtt.read(&Message::new("z/bridge/devices", list)) {
            for device in devices.into_iter().take(4) {
                let mut description = Description::new(Convention::Zigbee2mqtt, &device.identity.key, &device.topic);
                description.values = device.values;
                // Its state, as the list itself pretends to be one.
                let _ = zigbee2mqtt::Zigbee2mqtt.read_own(&description, "", &Message::new(&device.topic, list));
            }
        }
    })?;
    Ok(())
}

#[test]
fn rule_import_survives_mutated_rules() -> anyhow::Result<()> {
    use hearth_model::automations::RuleSet;
    let seeds = corpus("rules")?;
    let destinations = std::collections::BTreeSet::from(["home".to_owned()]);
    fuzz("rule import", &seeds, |body| {
        let json: Result<RuleSet, _> = serde_json::from_slice(body);
        let yaml = hub::automation::model::parse_rule_set_yaml(body);
        for set in json.into_iter().chain(yaml) {
            for rule in &set.rules {
                let _ = hub::automation::model::validate(rule, &destinations);
            }
        }
    })?;
    Ok(())
}

/// Valid MQTT packets for `device`: CONNECT, PUBLISH at QoS 0 and 1, SUBSCRIBE, PINGREQ,
/// DISCONNECT, each as the seed of a connection's bytes.
fn mqtt_seeds(device: &str, secret: &str) -> Vec<Vec<u8>> {
    fn utf8(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    }
    fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
        let mut out = vec![first];
        let mut n = body.len();
        loop {
            let b = (n % 128) as u8;
            n /= 128;
            out.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                break;
            }
        }
        out.extend(body);
        out
    }
    let mut connect = utf8("MQTT");
    connect.extend([4, 0xC2, 0, 30]);
    connect.extend(utf8("fuzz"));
    connect.extend(utf8(device));
    connect.extend(utf8(secret));
    let connect = packet(0x10, connect);
    let mut publish0 = utf8(&format!("hearth/{device}/power"));
    publish0.extend(b"21.5");
    let mut publish1 = utf8(&format!("hearth/{device}"));
    publish1.extend([0, 7]);
    publish1.extend(br#"{"temperature":21.5,"humidity":40}"#);
    let mut subscribe = vec![0, 9];
    subscribe.extend(utf8(&format!("hearth/{device}/set/#")));
    subscribe.push(1);
    let rest = [
        packet(0x30, publish0),
        packet(0x32, publish1),
        packet(0x82, subscribe),
        packet(0xC0, vec![]),
        packet(0xE0, vec![]),
    ];
    let mut seeds = vec![connect.clone()];
    for p in &rest {
        seeds.push([connect.clone(), p.clone()].concat());
    }
    seeds.push([connect, rest.concat()].concat());
    seeds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_server_survives_mutated_packets() -> anyhow::Result<()> {
    count_panics();
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_test(&dir.path().join("data"));
    config.mqtt.connect_timeout_s = 1;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let (device, secret) = hub.add_device(&owner, "Fuzzed").await?;
    let addr = hub.mqtt.ok_or_else(|| anyhow::anyhow!("no MQTT"))?;
    let seeds = mqtt_seeds(&device, &secret);
    let mut rng = Rng::new();
    let started = Instant::now();
    let mut sent = 0;
    while sent < CONNECTIONS && started.elapsed() < BUDGET {
        let input = if sent < seeds.len() { seeds[sent].clone() } else { rng.mutate(&seeds) };
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let _ = stream.write_all(&input).await;
        // Whatever the hub answers, briefly; then hang up.
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_millis(5), stream.read(&mut buf)).await;
        sent += 1;
    }
    println!("MQTT: {sent} mutated connections in {:?}", started.elapsed());
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the hub panicked (see above)");
    // And a real device is still served.
    let (client, mut events) = mqtt_connect(addr, "after-fuzz", &device, &secret).await?;
    client.publish(format!("hearth/{device}/power"), QoS::AtLeastOnce, false, "7").await?;
    wait_puback(&mut events, None).await?;
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coap_server_survives_mutated_datagrams() -> anyhow::Result<()> {
    use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
    count_panics();
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_test(&dir.path().join("data"));
    config.coap.plain = true;
    let hub = TestHub::start_with(config).await?;
    let owner = hub.owner().await?;
    let (device, key) = hub.add_device(&owner, "Fuzzed").await?;
    let plain = hub.coap_plain.ok_or_else(|| anyhow::anyhow!("no plain CoAP"))?;
    let request = |code: RequestType, observe: bool, path: &[&str], payload: &[u8]| -> anyhow::Result<Vec<u8>> {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(code);
        p.header.message_id = 7;
        p.set_token(vec![1, 2, 3, 4]);
        if observe {
            p.set_observe_value(0);
        }
        for segment in path {
            p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        p.add_option(CoapOption::UriQuery, format!("k={key}").into_bytes());
        p.payload = payload.to_vec();
        p.to_bytes().map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    let seeds = vec![
        request(RequestType::Post, false, &["d", &device, "power"], b"21.5")?,
        request(RequestType::Put, false, &["d", &device], br#"{"temperature":21.5}"#)?,
        request(RequestType::Get, true, &["d", &device, "power"], b"")?,
        request(RequestType::Get, false, &[".well-known", "core"], b"")?,
    ];
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(plain).await?;
    let mut rng = Rng::new();
    let started = Instant::now();
    let mut sent = 0;
    while sent < DATAGRAMS && started.elapsed() < BUDGET {
        let input = if sent < seeds.len() { seeds[sent].clone() } else { rng.mutate(&seeds) };
        let _ = socket.send(&input[..input.len().min(1400)]).await;
        sent += 1;
        if sent % 64 == 0 {
            // Drain answers so the socket's buffer does not fill, and pace the flood.
            let mut buf = [0u8; 1500];
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(1), socket.recv(&mut buf)).await {}
        }
    }
    println!("CoAP: {sent} mutated datagrams in {:?}", started.elapsed());
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the hub panicked (see above)");
    // And a real request is still answered: a reading posted, then read back.
    let fresh = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    fresh.connect(plain).await?;
    fresh.send(&request(RequestType::Post, false, &["d", &device, "power"], b"42.25")?).await?;
    let mut buf = [0u8; 1500];
    let len = tokio::time::timeout(Duration::from_secs(5), fresh.recv(&mut buf)).await??;
    let reply = Packet::from_bytes(&buf[..len]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(
        matches!(reply.header.code, MessageClass::Response(ResponseType::Changed | ResponseType::Created)),
        "the hub still takes a real reading: {:?}",
        reply.header.code
    );
    hub.stop().await?;
    Ok(())
}
