"""A quiet home's load on a hub binary, and what it costs the SD card.

    python3 tests/load/quiet.py target/release/hub [--devices 50] [--every 10] [--minutes 5]
                                                   [--qos 1] [--strace] [--acked-within MS]
                                                   [--unacked-within MS]

Starts the hub on loopback with a fresh data directory (production commit policy), adds
`--devices` devices, and has each send its four values (temperature, humidity, pressure,
battery) as one JSON message every `--every` seconds at `--qos`, for `--minutes`. Prints:

- bytes the hub process wrote to storage (`write_bytes` in /proc/PID/io), per second, per
  day and per reading, and the ratio to the readings' own bytes (the JSON the devices sent:
  the baseline, measured in the same run);
- PUBACK delay p50/p99/max (QoS 1);
- with `--strace`: bytes written and fsyncs per file (`strace -f -y`), and so commits per
  second (fsyncs of the WAL); strace slows the hub, so the totals are taken without it;
- the database's size and its pages per table (SQLite's dbstat);
- the biggest writes, by the second (an hourly fold, a checkpoint), and what the rest
  comes to a day.

Every loop is bounded by the run's time.
"""
import argparse, collections, json, os, re, signal, sqlite3, subprocess, sys, threading, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "attack"))
import requests  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from hubproc import free_port, hub_pid, start  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("binary")
ap.add_argument("--devices", type=int, default=50)
ap.add_argument("--every", type=float, default=10.0)
ap.add_argument("--minutes", type=float, default=5.0)
ap.add_argument("--qos", type=int, choices=(0, 1), default=1)
ap.add_argument("--strace", action="store_true")
ap.add_argument("--acked-within", type=int, help="store.acked_within_ms (default: the hub's)")
ap.add_argument("--unacked-within", type=int, help="store.unacked_within_ms (default: the hub's)")
args = ap.parse_args()

mqtt_port = free_port()
extra = "[store]\n"
if args.acked_within:
    extra += f"acked_within_ms = {args.acked_within}\n"
if args.unacked_within:
    extra += f"unacked_within_ms = {args.unacked_within}\n"
base, data = start(args.binary, mqtt_port, extra)
code = open(f"{data}/setup-code").read().strip()
owner = requests.Session()
r = owner.post(base + "/api/setup", json={"code": code, "username": "owner", "password": "a long owner password"})
assert r.status_code == 201, r.text
devices = []
for i in range(args.devices):
    r = owner.post(base + "/api/devices", json={"name": f"Sensor {i}"})
    assert r.status_code == 201, r.text
    devices.append(r.json())
pid = hub_pid(data)


def written():
    for line in open(f"/proc/{pid}/io"):
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise SystemExit("no write_bytes in /proc/PID/io")


lock = threading.Lock()
delays, payload_bytes, readings = [], [0], [0]
sent_at = {}


def connect(device):
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"quiet-{device['id']}")
    c.username_pw_set(device["id"], device["secret"])

    def on_publish(client, userdata, mid, reason, props):
        t = sent_at.pop((device["id"], mid), None)
        if t is not None:
            with lock:
                delays.append(time.monotonic() - t)
    c.on_publish = on_publish
    c.connect("127.0.0.1", mqtt_port, keepalive=60)
    c.loop_start()
    return c


clients = [connect(d) for d in devices]
time.sleep(1)
tracer = None
if args.strace:
    log = os.path.join(os.path.dirname(data), "strace")
    tracer = subprocess.Popen(["strace", "-f", "-y", "-qq", "-e", "trace=pwrite64,write,pwritev,fsync,fdatasync",
                               "-o", log, "-p", str(pid)], stderr=subprocess.DEVNULL)
    time.sleep(1)

start_bytes, started = written(), time.monotonic()
until = started + args.minutes * 60

# write_bytes once a second, to tell the hourly fold and checkpoints from the commits.
samples = []


def sample():
    while time.monotonic() < until + 2:
        samples.append((time.monotonic() - started, time.time(), written()))
        time.sleep(1)


threading.Thread(target=sample, daemon=True).start()
# Each device reports at its own phase within the period, as real ones do.
phase = {d["id"]: (i / len(devices)) * args.every for i, d in enumerate(devices)}
next_at = {d["id"]: started + phase[d["id"]] for d in devices}
n = 0
next_report = started + 600
while True:
    now = time.monotonic()
    if now >= next_report:
        # A long run says how it goes every ten minutes (hourly folds show as steps).
        so_far = written() - start_bytes
        print(f"  after {(now - started) / 60:.0f} min: {so_far / 1e6:.1f} MB written, "
              f"{so_far * 86400 / (now - started) / 1e6:.0f} MB/day so far", flush=True)
        next_report += 600
    due = min(next_at.values())
    if due >= until:
        break
    if due > now:
        time.sleep(min(due - now, 0.2))
        continue
    for d, c in zip(devices, clients):
        if next_at[d["id"]] <= now:
            n += 1
            body = json.dumps({"temperature": round(20 + (n % 50) / 10, 1), "humidity": 40 + n % 20,
                               "pressure": round(1013 + (n % 30) / 10, 1), "battery": 90 - n % 5})
            with lock:
                payload_bytes[0] += len(body)
                readings[0] += 4
            info = c.publish(f"hearth/{d['id']}", body, qos=args.qos)
            if args.qos:
                sent_at[(d["id"], info.mid)] = now
            next_at[d["id"]] += args.every
time.sleep(min(2.0, args.every))
elapsed = time.monotonic() - started
total = written() - start_bytes
if tracer:
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
for c in clients:
    c.loop_stop()
    c.disconnect()

day = 86400 / elapsed
print(f"quiet home: {args.devices} devices x 4 values every {args.every:g} s at QoS {args.qos}, "
      f"{elapsed / 60:.1f} min, {readings[0]} readings ({readings[0] / elapsed:.1f}/s)")
print(f"written by the hub: {total / elapsed / 1024:.1f} KiB/s = {total * day / 1e6:.0f} MB/day, "
      f"{total / max(readings[0], 1):.0f} bytes per reading")
print(f"baseline, the readings' own JSON: {payload_bytes[0] / elapsed:.0f} B/s; "
      f"written / sent = {total / max(payload_bytes[0], 1):.1f}")
steps = sorted(((b2 - b1, t1, w) for (t1, w, b1), (_, _, b2) in zip(samples, samples[1:])), reverse=True)
big = [s for s in steps[:5] if s[0] > 256 * 1024]
for size, t, wall in big:
    print(f"  a burst: {size / 1e6:.2f} MB in one second, {t / 60:.1f} min in "
          f"({time.strftime('%H:%M:%S', time.gmtime(wall))} UTC)")
if big:
    rest = total - sum(b[0] for b in big)
    print(f"  without those: {rest * day / 1e6:.0f} MB/day")
if args.qos:
    d = sorted(delays)
    pct = lambda p: d[min(int(len(d) * p), len(d) - 1)] * 1000 if d else float("nan")
    print(f"PUBACK delay: p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {pct(1.0):.1f} ms "
          f"({len(d)} of {readings[0] // 4} acknowledged)")

if tracer:
    per_file, syncs = collections.Counter(), collections.Counter()
    pat = re.compile(r"^\d+\s+(\w+)\((\d+)<([^>]*)>.*\)\s+=\s+(-?\d+)")
    for line in open(log):
        m = pat.match(line)
        if not m:
            continue
        call, _, path, ret = m.groups()
        name = os.path.basename(path)
        if call in ("fsync", "fdatasync"):
            syncs[name] += 1
        elif int(ret) > 0 and not path.startswith(("socket:", "pipe:", "anon_inode:", "/dev/")):
            per_file[name] += int(ret)
    print("with strace (slower; for the shares, not the totals):")
    for name, b in per_file.most_common(10):
        print(f"  {name:<24} {b / elapsed / 1024:8.1f} KiB/s  {syncs[name] / elapsed:6.2f} fsyncs/s")
    for name in set(syncs) - set(per_file):
        print(f"  {name:<24} {'':>8}        {syncs[name] / elapsed:6.2f} fsyncs/s")



def wal_frames(path):
    """The WAL's frames since its last reset: (page number, whether it ends a commit)."""
    try:
        raw = open(path, "rb").read()
    except OSError:
        return []
    if len(raw) < 32:
        return []
    page = int.from_bytes(raw[8:12], "big")
    salt = raw[16:24]
    frames, at = [], 32
    while at + 24 + page <= len(raw):
        header = raw[at:at + 24]
        if header[8:16] != salt:  # left over from before the last reset
            break
        frames.append((int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big") != 0))
        at += 24 + page
    return frames


# What the WAL holds, by table: a sample of what each commit writes (the WAL starts again
# after each checkpoint). Read before the database is opened, which could checkpoint it.
frames = wal_frames(f"{data}/hearth.db-wal")
db = sqlite3.connect(f"file:{data}/hearth.db?mode=ro", uri=True)
page = db.execute("PRAGMA page_size").fetchone()[0]
print(f"database: {os.path.getsize(f'{data}/hearth.db') / 1e6:.1f} MB, page {page} B; "
      f"WAL {os.path.getsize(f'{data}/hearth.db-wal') / 1e6 if os.path.exists(f'{data}/hearth.db-wal') else 0:.1f} MB")
try:
    rows = db.execute("SELECT name, COUNT(*), SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 6").fetchall()
    print("  pages: " + ", ".join(f"{name} {count}" for name, count, _ in rows))
except sqlite3.OperationalError:
    pass
if frames:
    try:
        owner_of = dict((p, name) for name, p in db.execute("SELECT name, pageno FROM dbstat"))
    except sqlite3.OperationalError:
        owner_of = {}
    commits = sum(1 for _, last in frames if last)
    by = collections.Counter(owner_of.get(p, "free or new") for p, _ in frames)
    print(f"WAL sample: {len(frames)} frames in {commits} commits = {len(frames) / max(commits, 1):.1f} pages per commit; by table:")
    for name, count in by.most_common(8):
        print(f"  {name:<28} {count / max(commits, 1):6.2f} pages per commit")

# What the writer said about folding recent readings into chunks (with RUST_LOG at debug
# for hub::ingest::pipeline).
folds = [line.strip() for line in open(os.path.join(os.path.dirname(data), "out"), errors="replace")
         if "folded recent readings" in line]
if folds:
    print(f"folds: {len(folds)}")
    for line in folds:
        print("  " + line[-160:])
