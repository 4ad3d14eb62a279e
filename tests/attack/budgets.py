"""Black-box tries at the hub's budgets of CPU, memory and connections, as someone on the
home network holding a bridge's, a tenant's or no credentials at all would: starts the given
hub binary (a release build) on loopback with a fresh hub and data directory for each
attack, then

  1. has one bridge announce 320 Home Assistant values that all read one state topic
     through `{{ value | float }}` and send two ~4 MiB messages of control characters
     there (not a number: each value's refusal spells the payload out in JSON, six bytes
     a character), while the owner asks /api/health and another device publishes at QoS 1
     (hub CPU seconds, the honest parties' delays);
  2. has a tenant's bridges announce device-based configs whose long shared options and
     texts are copied into 64 components each (peak RSS growth per byte sent), then checks
     that a legitimate 4 MiB Zigbee2MQTT device list of 200 devices still passes;
  5. floods the MQTT over TLS port (136/s from 100 addresses, then 5,000/s from 200) and
     the HTTPS port (585/s, then 4,000/s from 300 addresses) with connections that say
     nothing, while a device and the owner, who logged in from their addresses before,
     open TCP, pause, then speak;
  6. holds 600 idle sockets from the device's own address at the plain MQTT port while the
     device connects three times; then opens new ones there as fast as it can.

Each party has its own loopback addresses: attackers 127.0.0.10-209 and 127.0.1-2.x, the
owner 127.0.0.4/.5, devices 127.0.0.1, .6, .7. Hub CPU time and memory are read from
/proc/<pid>. Raw MQTT 3.1.1 packets, http.client and ssl; no other tools. Bounded in time
(about two minutes; a watchdog ends it with BAD at 145 s).

    python3 tests/attack/budgets.py target/release/hub
"""
import collections, http.client, json, os, re, signal, socket, sqlite3, ssl, struct, sys, threading, time

from hubproc import free_port, hub_pid, idle_flood, remaining, start, utf8

binary = sys.argv[1]
began = time.monotonic()
corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../hub/tests/data/ecosystems")
MiB = 1024 * 1024

results = []
def check(what, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok ' if ok else 'BAD'} {what}{': ' + str(detail) if detail and not ok else ''}", flush=True)

def figure(text):
    print(f"   {text}", flush=True)

# Hubs started here, ended by their id when done (or when the watchdog fires).
hubs = []
def watchdog():
    print("BAD the script ran past 145 s: the hub stalled somewhere", flush=True)
    for pid in hubs:
        try: os.kill(pid, signal.SIGKILL)
        except OSError: pass
    os._exit(1)
timer = threading.Timer(145, watchdog); timer.daemon = True; timer.start()

# --- The hub's own figures, from /proc ---
TICK = os.sysconf("SC_CLK_TCK")
def cpu_seconds(pid):
    """User and system CPU time the hub has used so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK
def memory(pid):
    """(VmRSS, VmHWM) in bytes."""
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
    return int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024

# --- Raw MQTT 3.1.1 ---
def packet(kind, body):
    return bytes([kind]) + remaining(len(body)) + body

class Mqtt:
    """One device session: TCP from `source`, after `pause` seconds TLS (with `context`)
    and CONNECT. `hello` is when its first byte after TCP (ClientHello or CONNECT) left;
    `accepted` whether its CONNACK said yes. Every read and write times out."""
    def __init__(self, port, creds, source, client_id, context=None, pause=0.0, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        if pause: time.sleep(pause)
        self.hello = time.monotonic()
        if context: self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        var = utf8("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 60)
        self.sock.sendall(packet(0x10, var + utf8(client_id) + utf8(creds[0]) + utf8(creds[1])))
        kind, body = self.read()
        self.accepted = kind == 0x20 and body[1:2] == b"\x00"
        self.pkid = 0

    def exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk: raise ConnectionError("closed by the hub")
            data += chunk
        return data

    def read(self):
        kind = self.exactly(1)[0] & 0xF0
        length, shift = 0, 0
        while True:
            b = self.exactly(1)[0]
            length |= (b & 0x7F) << shift; shift += 7
            if not b & 0x80: break
        return kind, self.exactly(length)

    def publish(self, topic, payload):
        """Publishes at QoS 1; seconds from sending to its PUBACK (an exception if none)."""
        self.pkid = self.pkid % 65535 + 1
        sent = time.monotonic()
        self.sock.sendall(packet(0x32, utf8(topic) + struct.pack(">H", self.pkid) + payload))
        while True:
            kind, body = self.read()
            if kind == 0x40 and body == struct.pack(">H", self.pkid):
                return time.monotonic() - sent

    def close(self):
        try: self.sock.close()
        except OSError: pass

# --- A hub, its owner and its devices ---
class Hub:
    def __init__(self, tls=False):
        self.mqtt_port, self.mqtts_port = free_port(), free_port()
        self.base, self.data = start(binary, self.mqtt_port, tls=tls, mqtts_port=self.mqtts_port)
        self.pid = hub_pid(self.data)
        hubs.append(self.pid)
        self.port = int(self.base.rsplit(":", 1)[1])
        self.tls = tls
        self.context = ssl.create_default_context(cafile=os.path.join(self.data, "tls", "ca.pem")) if tls else None
        self.log = os.path.join(os.path.dirname(self.data), "out")
        code = open(f"{self.data}/setup-code").read().strip()
        status, text, headers = self.call("POST", "/api/setup", {"code": code, "username": "owner",
                                                                 "password": "a long owner password"})
        assert status == 201, (status, text)
        self.cookie = headers["set-cookie"].split(";")[0]

    def call(self, method, path, body=None, source="127.0.0.4", cookie=None, timeout=30):
        """(status, text, lower-cased headers); status 0 and the error if none came."""
        if self.tls:
            conn = http.client.HTTPSConnection("localhost", self.port, timeout=timeout, source_address=(source, 0),
                                               context=self.context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=(source, 0))
        headers = {"content-type": "application/json"}
        if cookie: headers["cookie"] = cookie
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace"), {k.lower(): v for k, v in r.getheaders()}
        except (OSError, http.client.HTTPException) as e:
            return 0, str(e), {}
        finally:
            conn.close()

    def owner(self, method, path, body=None, timeout=30):
        status, text, _ = self.call(method, path, body, cookie=self.cookie, timeout=timeout)
        return status, json.loads(text) if text and status and status < 300 else text

    def device(self, name, namespaces=None, cookie=None):
        status, text, _ = self.call("POST", "/api/devices", {"name": name}, cookie=cookie or self.cookie)
        assert status == 201, (status, text)
        d = json.loads(text)
        if namespaces:
            status, text, _ = self.call("PUT", f"/api/devices/{d['id']}/bridge", {"namespaces": namespaces},
                                        cookie=cookie or self.cookie)
            assert status == 200, (status, text)
        return d["id"], d["secret"]

    def devices(self, cookie=None, timeout=60):
        """The device list (the owner's, or that of whose `cookie` it is) and its size in bytes."""
        status, text, _ = self.call("GET", "/api/devices", cookie=cookie or self.cookie, timeout=timeout)
        return (json.loads(text) if status == 200 else []), len(text)

    def stop(self):
        """Ends this hub (by its id): asked, then after 5 s made to."""
        hubs.remove(self.pid)
        try: os.kill(self.pid, signal.SIGTERM)
        except OSError: return
        for _ in range(100):
            try:
                if open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z": return
            except OSError:
                return
            time.sleep(0.05)
        try: os.kill(self.pid, signal.SIGKILL)
        except OSError: pass

def refusal(devices, dev_id):
    d = next((d for d in devices if d["id"] == dev_id), {})
    return (d.get("rejected") or {}).get("last_reason", "")

def log_lines(hub, *words, last=3):
    """The hub's last log lines holding any of `words` (colours taken out)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(hub.log, errors="replace").read())
    return [l.strip()[:240] for l in text.splitlines() if any(w in l for w in words)][-last:]


# ---------------------------------------------------------------------------------------
# 1. One bridge freezes the hub: 320 values read one state topic; two ~4 MiB messages there.
def attack_freeze(hub):
    print("1. one bridge, 320 values on one state topic, two 4 MiB messages", flush=True)
    diy = hub.device("DIY node", ["diy/#", "homeassistant/#"])
    meter = hub.device("Meter")
    # Five device-based configs of 64 components: one device, 320 values, all on diy/state,
    # each through the commonest template there is.
    node = Mqtt(hub.mqtt_port, diy, "127.0.0.6", "diy-config", timeout=30)
    for k in range(5):
        cmps = {f"v{k}_{j}": {"p": "sensor", "uniq_id": f"freezer-{k}-{j}"} for j in range(64)}
        config = {"dev": {"ids": "freezer", "name": "Freezer"}, "stat_t": "diy/state", "val_tpl": "{{ value | float }}",
                  "cmps": cmps}
        node.publish(f"homeassistant/device/freezer{k}/config", json.dumps(config).encode())
    # (The attack reaches the code: each value reads diy/state, a small message gives 320 readings.)
    node.publish("diy/state", b"21.5")
    node.close()
    devices, _ = hub.devices()
    me = next(d for d in devices if d["id"] == diy[0])
    values = len((me.get("discovered") or {}).get("values", []))
    metrics = len(me.get("metrics", []))
    figure(f"the bridge's device has {values} values on diy/state; one small message there gave {metrics} metrics"
           f" (last refusal: {refusal(devices, diy[0])!r})")

    device = Mqtt(hub.mqtt_port, meter, "127.0.0.7", "meter")
    quiet = max(device.publish(f"hearth/{meter[0]}/power", b"1.5") for _ in range(3))
    t = time.monotonic(); hub.call("GET", "/api/health", timeout=10); quiet_api = time.monotonic() - t
    figure(f"quiet: the device's PUBACK in {quiet * 1000:.0f} ms, /api/health in {quiet_api * 1000:.0f} ms")

    # Two sessions of the bridge each send one message just under 4 MiB on diy/state: text,
    # not a number (control characters, which JSON spells in six bytes each).
    attackers = [Mqtt(hub.mqtt_port, diy, f"127.0.0.{10 + n}", f"diy-big-{n}", timeout=40) for n in range(2)]
    big = b"\x01" * (4 * MiB - 4096)
    acked = [None, None]
    def send(n):
        try: acked[n] = attackers[n].publish("diy/state", big)
        except OSError as e: acked[n] = f"{e!r}"
    cpu_before = cpu_seconds(hub.pid)
    started = time.monotonic()
    senders = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(2)]

    # Meanwhile: the owner asks /api/health (a new connection each time, from its first
    # packet), and the other device publishes at QoS 1 (from PUBLISH to PUBACK).
    # Each probe: (seconds, answered); one left unanswered (timed out) ends its loop.
    api_delays, device_delays = [], []
    def owner_probes():
        while time.monotonic() - started < 30 and (None in acked or len(api_delays) < 3):
            t = time.monotonic()
            status = hub.call("GET", "/api/health", source="127.0.0.5", timeout=10)[0]
            api_delays.append((time.monotonic() - t, status == 200))
            if status != 200: break
            time.sleep(0.02)
    def device_probes():
        while time.monotonic() - started < 30 and (None in acked or len(device_delays) < 3):
            t = time.monotonic()
            try: device.publish(f"hearth/{meter[0]}/power", f"{len(device_delays)}.5".encode())
            except OSError:
                device_delays.append((time.monotonic() - t, False)); break
            device_delays.append((time.monotonic() - t, True))
            time.sleep(0.02)
    probes = [threading.Thread(target=owner_probes, daemon=True), threading.Thread(target=device_probes, daemon=True)]
    for p in probes: p.start()
    for s in senders: s.start()
    for s in senders: s.join(max(0.1, 40 - (time.monotonic() - started)))
    for p in probes: p.join(max(0.1, 45 - (time.monotonic() - started)))
    busy = time.monotonic() - started
    cpu = cpu_seconds(hub.pid) - cpu_before
    for c in attackers + [device]: c.close()
    def worst(delays):
        took, answered = max(delays, default=(99.0, False))
        return took, all(a for _, a in delays), f"{took * 1000:.0f} ms{'' if answered else ' (no answer, timed out)'}"
    api, device_ok = worst(api_delays), worst(device_delays)
    figure(f"the hub spent {cpu:.2f} CPU s on 2 x {len(big) / MiB:.2f} MiB in {busy:.1f} s; the bridge's PUBACKs: "
           + ", ".join(f"{a:.2f} s" if isinstance(a, float) else str(a) for a in acked))
    figure(f"/api/health: {len(api_delays)} asked, worst {api[2]}; the device's QoS 1: "
           f"{len(device_delays)} sent, worst {device_ok[2]}")
    check("1. while one bridge sends two 4 MiB messages on a topic 320 values read, the owner's /api/health "
          "is answered within 1 s of its first packet", api[1] and api[0] < 1.0, f"worst {api[2]}")
    check("1. and another device's QoS 1 PUBLISH is acknowledged within 1 s", device_ok[1] and device_ok[0] < 1.0,
          f"worst {device_ok[2]}")


# ---------------------------------------------------------------------------------------
# 2. Memory amplification: long options and texts, shared by 64 components, many configs.
CONFIGS = 37

def attack_memory(hub):
    print("2. a tenant's bridges: long shared options copied into 64 components", flush=True)
    # The attacker is a tenant, with bridges of its own.
    status, invite = hub.owner("POST", "/api/tenancies", {})
    assert status == 201, invite
    status, _, headers = hub.call("POST", "/api/invites/accept", {"code": invite["code"], "username": "tenant",
                                                                 "password": "a long tenant password"}, source="127.0.0.20")
    assert status == 201, status
    tenant = headers["set-cookie"].split(";")[0]
    time.sleep(1.1)  # the tenancy starts on the next second (as in promise.py)
    bridges = [hub.device(f"Node {b}", [f"mem{b}/#", f"homeassistant/device/mem{b}/#"], cookie=tenant) for b in range(3)]
    zigbee = hub.device("Zigbee2MQTT", ["zigbee2mqtt/#"])
    hub.devices(tenant)
    # The peak from here on: the hub's peak RSS is reset to its RSS now.
    open(f"/proc/{hub.pid}/clear_refs", "w").write("5")
    rss_before, _ = memory(hub.pid)
    cpu_before = cpu_seconds(hub.pid)

    # Each bridge describes one device in 37 configs; each config shares 32 options of
    # 255 bytes and long texts with its 64 components (ids and keys as long as allowed):
    # about 17 KB each, 1.87 MB in all (as in the observation that grew the hub by 344 MB).
    # The three bridges send at once, from their own addresses.
    options = [f"{i:02}-" + "o" * 252 for i in range(32)]
    sent, acked, failed = [0], [0], []
    def bridge(b, creds):
        try:
            c = Mqtt(hub.mqtt_port, creds, f"127.0.0.{30 + b}", f"mem-{b}", timeout=30)
            assert c.accepted, "the tenant's bridge could not log in"
            for k in range(CONFIGS):
                obj = f"x{k}" + "_" * 200
                cmps = {f"s{k}_{j}_" + "k" * 50: {"p": "select", "uniq_id": f"m{b}k{k}j{j}"} for j in range(64)}
                config = {"dev": {"ids": f"mem{b}", "name": "N" * 64, "mf": "M" * 64, "mdl": "D" * 64,
                                  "sw": "S" * 64, "sa": "A" * 64},
                          "name": "E" * 64, "dev_cla": "c" * 256, "stat_cla": "s" * 256,
                          "cmd_t": f"mem{b}/" + "t" * 240, "stat_t": f"mem{b}/" + "u" * 240,
                          "val_tpl": "{{ value_json." + "v" * 230 + " }}", "ops": options, "cmps": cmps}
                topic = f"homeassistant/device/mem{b}/{obj}/config"
                payload = json.dumps(config).encode()
                sent[0] += len(packet(0x32, utf8(topic) + b"\0\1" + payload))
                c.publish(topic, payload)
                acked[0] += 1
            c.close()
        except (OSError, AssertionError) as e:
            failed.append(repr(e))
    t = time.monotonic()
    senders = [threading.Thread(target=bridge, args=(b, creds), daemon=True) for b, creds in enumerate(bridges)]
    for s in senders: s.start()
    for s in senders: s.join(max(0.1, 60 - (time.monotonic() - t)))
    took, cpu = time.monotonic() - t, cpu_seconds(hub.pid) - cpu_before
    devices, size = hub.devices(tenant)
    rss_after, peak = memory(hub.pid)
    grew = peak - rss_before
    # (The attack reaches the code: the configs are read, their options kept.)
    ours = {b[0] for b in bridges}
    behind = [d for d in devices if d.get("bridge") in ours or d["id"] in ours]
    values = sum(len((d.get("discovered") or {}).get("values", [])) for d in behind)
    kept = sum(len(v.get("options", [])) for d in behind for v in (d.get("discovered") or {}).get("values", []))
    figure(f"the attacker sent {sent[0]:,} bytes in {3 * CONFIGS} configs ({acked[0]} acknowledged in {took:.1f} s, the hub spending "
           f"{cpu:.1f} CPU s{'; ' + ', '.join(failed) if failed else ''}); {len(behind)} devices, {values} values, "
           f"{kept} options kept (last refusal: {refusal(devices, bridges[0][0])[:120]!r})")
    figure(f"GET /api/devices is then {size:,} bytes; RSS {rss_before / MiB:.1f} MiB before, peak {peak / MiB:.1f} MiB "
           f"(+{grew / MiB:.1f} MiB, {grew / sent[0]:.0f} bytes per byte sent), {rss_after / MiB:.1f} MiB after")
    check(f"2. from {sent[0] / 1000:.0f} kB of device-based configs of three bridges, peak RSS grows at most 10 bytes "
          "per byte sent", grew <= 10 * sent[0], f"{grew / sent[0]:.0f} bytes per byte")
    check("2. and at most 64 MiB in all", grew <= 64 * MiB, f"+{grew / MiB:.1f} MiB")

    # A legitimate Zigbee2MQTT network: 200 devices from the corpus list, distinct
    # addresses and names, padded to just under 4 MiB, still passes.
    listed = json.load(open(f"{corpus}/z2m-bridge-devices.json"))
    entries = [listed[0]]
    for n in range(200):
        e = json.loads(json.dumps(listed[1 + n % (len(listed) - 1)]))
        e["ieee_address"] = f"0x00158d00{n:08x}"
        e["network_address"] = 1000 + n
        e["friendly_name"] = f"{e['friendly_name']}_{n:03}"
        entries.append(e)
    text = json.dumps(entries)
    text = text[:-1] + " " * (4 * MiB - 64 - len(text)) + "]"
    c = Mqtt(hub.mqtt_port, zigbee, "127.0.0.1", "zigbee2mqtt", timeout=60)
    try: took = c.publish("zigbee2mqtt/bridge/devices", text.encode())
    except OSError as e: took = f"{e!r}"
    c.close()
    count = 0
    for _ in range(3):
        devices, _ = hub.devices()
        count = sum(1 for d in devices if d.get("bridge") == zigbee[0])
        if count >= 200: break
        time.sleep(1)
    _, peak_z2m = memory(hub.pid)
    # What its descriptions take as stored (sealed: a few dozen bytes more than the text),
    # against the household's budget of 8 MiB.
    db = sqlite3.connect(f"file:{hub.data}/hearth.db?mode=ro", uri=True, timeout=5)
    stored = db.execute("SELECT COALESCE(SUM(LENGTH(discovered_sealed)), 0) FROM devices WHERE bridge_id = ?",
                        (zigbee[0],)).fetchone()[0]
    db.close()
    figure(f"the {len(text):,}-byte list was acknowledged in "
           f"{took if isinstance(took, str) else f'{took:.2f} s'}; peak RSS then {peak_z2m / MiB:.1f} MiB; "
           f"its devices' descriptions take {stored:,} bytes as stored")
    check(f"2. a legitimate 4 MiB Zigbee2MQTT list of 200 devices still passes ({count} devices)", count == 200,
          f"{count} devices; refusal {refusal(devices, zigbee[0])!r}")


# ---------------------------------------------------------------------------------------
# 5. Floods of connections that say nothing, from many addresses, at the TLS ports.
def flood(port, sources, rate, seconds, stop, stats, held_max=4000, first=b""):
    """Opens TCP connections to `port` at `rate` a second (0: as fast as it goes), round
    robin over `sources`, each non-blocking and then left idle (after sending `first`, if
    given, as soon as it is connected), until `stop` or `seconds`; keeps the newest
    `held_max` open. Puts (attempts, seconds, share of the newest held that were
    established) in `stats`."""
    held, opened, unsent = collections.deque(), 0, collections.deque()
    t0 = time.monotonic()
    while not stop.is_set() and time.monotonic() - t0 < seconds:
        due = (int((time.monotonic() - t0) * rate) - opened) if rate else 200
        if due <= 0:
            time.sleep(0.002); continue
        for _ in range(min(due, 200)):
            s = socket.socket(); s.setblocking(False)
            try:
                s.bind((sources[opened % len(sources)], 0))
                s.connect_ex(("127.0.0.1", port))
            except OSError:
                s.close()
            else:
                held.append(s)
                if first: unsent.append(s)
            opened += 1
            while len(held) > held_max: held.popleft().close()
        # Each says its first bytes once connected (at most a few hundred tries a round).
        for _ in range(min(len(unsent), 400)):
            s = unsent.popleft()
            try: s.send(first)
            except (BlockingIOError, InterruptedError): unsent.append(s)
            except OSError as e:
                if e.errno == 107: unsent.append(s)  # not connected yet
    took = time.monotonic() - t0
    # Of the newest held, those the handshake completed for (a dropped SYN leaves none).
    established = 0
    for s in held:
        try: s.getpeername(); established += 1
        except OSError: pass
    stats.append((opened, took, established / max(1, len(held))))
    for s in held: s.close()

def under_flood(port, sources, rate, honest, warm=1.0, seconds=12, first=b""):
    """Runs `honest()` while a flood runs (after `warm` s of it); returns its result, the
    rate the flood reached and the share of its connections established."""
    stop, stats = threading.Event(), []
    flooder = threading.Thread(target=flood, args=(port, sources, rate, seconds, stop, stats),
                               kwargs={"first": first}, daemon=True)
    flooder.start()
    time.sleep(warm)
    try: out = honest()
    finally:
        stop.set(); flooder.join(10)
    opened, took, established = stats[0] if stats else (0, 1, 0)
    return out, opened / took, established

def mqtt_device(hub, creds, source, pause):
    """A device over TLS: TCP, `pause`, then ClientHello, CONNECT and a QoS 1 PUBLISH.
    (accepted and acknowledged, seconds from its ClientHello, what went wrong)."""
    try:
        c = Mqtt(hub.mqtts_port, creds, source, f"honest-{source}", context=hub.context, pause=pause)
        if not c.accepted:
            return False, time.monotonic() - c.hello, "CONNACK refused"
        c.publish(f"hearth/{creds[0]}/power", b"7.5")
        took = time.monotonic() - c.hello; c.close()
        return True, took, ""
    except (OSError, ssl.SSLError) as e:
        return False, None, repr(e)

def owner_login(hub, source, pause):
    """The owner over HTTPS: TCP, `pause`, then ClientHello and POST /api/login.
    (logged in, seconds from its first packet (SYN), what went wrong)."""
    hello = None
    try:
        hello = time.monotonic()
        raw = socket.create_connection(("127.0.0.1", hub.port), timeout=5, source_address=(source, 0))
        time.sleep(pause)
        s = hub.context.wrap_socket(raw, server_hostname="localhost")
        body = json.dumps({"username": "owner", "password": "a long owner password"})
        s.sendall((f"POST /api/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode())
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            answer += chunk
        s.close()
        ok = answer.startswith(b"HTTP/1.1 200")
        return ok, time.monotonic() - hello, "" if ok else answer[:80]
    except (OSError, ssl.SSLError) as e:
        return False, None if hello is None else time.monotonic() - hello, repr(e)

def show(out):
    ok, took, why = out
    return f"{'answered' if ok else 'failed'}{f' in {took:.3f} s' if took is not None else ''}{f' ({why})' if why else ''}"

def attack_floods(hub):
    print("5. connection floods at the TLS ports", flush=True)
    dev = hub.device("Door sensor")
    # Before the flood, the device has connected from each address it uses, and the owner
    # has logged in from theirs: the proof of a past login the hub keeps places for. (A new
    # address under a flood cannot be told from the attacker's.)
    quiet = mqtt_device(hub, dev, "127.0.0.6", 1.5)
    quiet_7 = mqtt_device(hub, dev, "127.0.0.7", 0.5)
    owner_login(hub, "127.0.0.5", 0)
    figure(f"quiet: the device over TLS after a 1.5 s pause {show(quiet)} from its ClientHello (after 0.5 s from "
           f".7: {show(quiet_7)}); the owner's login after 0.5 s {show(owner_login(hub, '127.0.0.4', 0.5))} "
           "from its SYN")

    # The device opens TCP, waits 1.5 s (0.5 s), then speaks: ClientHello, CONNECT, PUBLISH.
    hundred = [f"127.0.0.{n}" for n in range(100, 200)]
    out, rate, established = under_flood(hub.mqtts_port, hundred, 136, lambda: mqtt_device(hub, dev, "127.0.0.6", 1.5))
    figure(f"MQTTS flood at {rate:,.0f} connections/s from 100 addresses ({established:.0%} established): "
           f"the device {show(out)}")
    check("5. through 136 idle connections/s from 100 addresses at the MQTT TLS port, a device that pauses 1.5 s "
          "after TCP connects and is acknowledged within 1 s of its ClientHello", out[0] and out[1] < 1.0, show(out))

    two_hundred = [f"127.0.0.{n}" for n in range(10, 210)]
    out, rate, established = under_flood(hub.mqtts_port, two_hundred, 5000,
                                         lambda: mqtt_device(hub, dev, "127.0.0.7", 0.5))
    figure(f"MQTTS flood at {rate:,.0f} connections/s from 200 addresses ({established:.0%} established): "
           f"the device {show(out)}")
    check(f"5. through {rate:,.0f} idle connections/s from 200 addresses at the MQTT TLS port, a device that pauses "
          "0.5 s connects and is acknowledged within 1 s of its ClientHello", out[0] and out[1] < 1.0, show(out))

    # The owner opens TCP, waits 0.5 s, then logs in: answered within 1 s of its SYN.
    three_hundred = [f"127.0.{1 + n // 200}.{10 + n % 200}" for n in range(300)]
    out, rate, established = under_flood(hub.port, three_hundred, 585, lambda: owner_login(hub, "127.0.0.4", 0.5))
    figure(f"HTTPS flood at {rate:,.0f} connections/s from 300 addresses ({established:.0%} established): "
           f"the owner's login {show(out)}")
    check("5. through 585 idle connections/s from 300 addresses at the HTTPS port, the owner, pausing 0.5 s after "
          "TCP, logs in within 1 s of its first packet", out[0] and out[1] < 1.0, show(out))
    out, rate, established = under_flood(hub.port, three_hundred, 4000, lambda: owner_login(hub, "127.0.0.5", 0))
    figure(f"HTTPS flood at {rate:,.0f} connections/s from 300 addresses ({established:.0%} established): "
           f"the owner's instant login {show(out)}")
    check(f"5. through {rate:,.0f} idle connections/s from 300 addresses at the HTTPS port, the owner logging in at "
          "once is answered within 1 s of its first packet", out[0] and out[1] < 1.0, show(out))

    # A tenant logs its own device in once from each of 100 addresses (so they are known,
    # as its household's), then floods from them: its own places give way, not the
    # owner's device pausing 1.5 s.
    status, invite = hub.owner("POST", "/api/tenancies", {})
    assert status == 201, invite
    status, _, headers = hub.call("POST", "/api/invites/accept", {"code": invite["code"], "username": "tenant",
                                                                 "password": "a long tenant password"}, source="127.0.0.20")
    assert status == 201, status
    time.sleep(1.1)  # the tenancy starts on the next second
    theirs = hub.device("Tenant's plug", cookie=headers["set-cookie"].split(";")[0])
    tenant_addresses = [f"127.0.3.{n}" for n in range(10, 110)]
    proved = 0
    for source in tenant_addresses:
        try:
            c = Mqtt(hub.mqtts_port, theirs, source, f"t-{source}", context=hub.context)
            proved += c.accepted; c.close()
        except (OSError, ssl.SSLError):
            pass
    out, rate, established = under_flood(hub.mqtts_port, tenant_addresses, 136,
                                         lambda: mqtt_device(hub, dev, "127.0.0.6", 1.5))
    figure(f"MQTTS flood at {rate:,.0f} connections/s from 100 addresses a tenant logged in from ({proved} of 100 "
           f"proved; {established:.0%} established): the owner's device {show(out)}")
    check("5. through 136 idle connections/s from 100 addresses a tenant logged in from, the owner's device that "
          "pauses 1.5 s is acknowledged within 1 s of its ClientHello", out[0] and out[1] < 1.0, show(out))
    figure("log: " + " | ".join(log_lines(hub, "make room", "TLS handshake failed")))


# ---------------------------------------------------------------------------------------
# 6. 600 idle sockets from the device's own address; the device connects three times.
def attack_own_address(hub):
    print("6. idle sockets from the device's own address (plain MQTT)", flush=True)
    dev = hub.device("Kitchen plug")
    def tries_of(tag, count):
        tries = []
        for n in range(count):
            t = time.monotonic()
            try:
                c = Mqtt(hub.mqtt_port, dev, "127.0.0.1", f"plug-{tag}-{n}")
                tries.append((c.accepted, time.monotonic() - t, "" if c.accepted else "refused"))
                c.close()
            except OSError as e:
                tries.append((False, time.monotonic() - t, repr(e)))
            time.sleep(0.05)
        return tries
    # 600 idle sockets held from 127.0.0.1 (those the hub closes opened again).
    stop = threading.Event()
    flooder, opened = idle_flood(hub.mqtt_port, stop, count=600, source="127.0.0.1")
    time.sleep(1.5)
    tries = tries_of("a", 3)
    stop.set(); flooder.join(15)
    accepted = sum(1 for ok, _, _ in tries if ok)
    figure(f"{accepted} of 3 accepted ({'; '.join(show(t) for t in tries)}); the flood opened "
           f"{opened[0] if opened else '?'} sockets")
    check("6. through 600 idle sockets held from its own address, a device gets CONNACK accepted 3 times of 3",
          accepted == 3, f"{accepted} of 3")
    # Harder: new idle connections from 127.0.0.1 as fast as they go. The device's login is
    # pushed out if 8 of them come while it is checked (about a millisecond): at 5,000/s it
    # still got in here every time; at 10,000/s, about 2 times of 3. So 10 tries.
    tries, rate, established = under_flood(hub.mqtt_port, ["127.0.0.1"], 0, lambda: tries_of("b", 10))
    accepted = sum(1 for ok, _, _ in tries if ok)
    refused = [show(t) for t in tries if not t[0]]
    figure(f"{accepted} of 10 accepted through {rate:,.0f} connections/s ({established:.0%} established)"
           + (f"; {refused[0]}" if refused else ""))
    check(f"6. through {rate:,.0f} new idle connections/s from its own address, a device gets CONNACK accepted "
          "10 times of 10", accepted == 10, f"{accepted} of 10")
    # The same, each socket saying one byte (the start of a CONNECT) and then nothing.
    tries, rate, established = under_flood(hub.mqtt_port, ["127.0.0.1"], 0, lambda: tries_of("c", 10), first=b"\x10")
    accepted = sum(1 for ok, _, _ in tries if ok)
    refused = [show(t) for t in tries if not t[0]]
    figure(f"{accepted} of 10 accepted through {rate:,.0f} connections/s saying one byte ({established:.0%} "
           "established)" + (f"; {refused[0]}" if refused else ""))
    check(f"6. through {rate:,.0f} new connections/s from its own address that each say one byte, a device gets "
          "CONNACK accepted 10 times of 10", accepted == 10, f"{accepted} of 10")
    figure("log: " + " | ".join(log_lines(hub, "make room")))


def run(attack, tls=False):
    """Runs one attack on a hub of its own, ended after it; an attack that cannot go on (the
    hub refused its setup, say) is BAD."""
    hub = Hub(tls=tls)
    try:
        attack(hub)
    except Exception as e:
        check(f"{attack.__name__} ran to its end", False, repr(e)[:300])
    finally:
        hub.stop()

# (Some of them only, for a closer look: `budgets.py <hub> 1 5`.)
only = set(sys.argv[2:]) or {"1", "2", "5", "6"}
if "1" in only: run(attack_freeze)
if "2" in only: run(attack_memory)
if "5" in only: run(attack_floods, tls=True)
if "6" in only: run(attack_own_address)

timer.cancel()
print(f"{sum(results)} passed, {len(results) - sum(results)} failed, in {time.monotonic() - began:.0f} s")
sys.exit(0 if all(results) else 1)
