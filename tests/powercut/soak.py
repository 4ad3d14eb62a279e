"""Power-cut soak: runs the hub with its data directory on LazyFS, cuts the power again and
again (the hub is killed and everything it had not fsynced is dropped), and after each cut
checks that the hub starts and kept every promise it made before the cut: its key, its CA,
its owner, every reading it acknowledged. Run it through tests/powercut/run, which builds
LazyFS (tests/powercut/lazyfs) and checks for root and /dev/fuse.

Every mount alternates between two models of a power cut: upstream LazyFS (names are kept,
unsynced file data is lost: close to ext4's journal) and the strict directory-entry model
(LAZYFS_DIRENT_STASH: a name created, renamed or removed since its directory was last
fsynced is undone too). Four phases share the cuts and the time:

1. aimed: a fresh data directory; LazyFS crashes right after a chosen operation on one of
   the hub's files (its key, the CA, the server certificate, the setup code, the database;
   the setup code's removal when the owner is created after a first start and a cut), or
   the cut comes a few milliseconds after the start or right after the hub first hands out
   its CA.
2. setup: the owner is created (which retires `setup-code`), and the cut comes shortly after.
3. load: devices publish QoS 1 over MQTT (two with many messages in flight, one with one at a
   time); each acknowledged reading is written to a file outside the mount; the cut comes
   at a random moment.
4. restart: the hub, holding data, is restarted and the cut comes in its first two seconds.

    python3 tests/powercut/soak.py --binary target/release/hub --lazyfs PATH --work DIR \
        [--budget SECONDS] [--cuts N]
"""
import argparse, hashlib, json, os, random, re, select, shutil, signal, ssl, subprocess, sys, threading, time

import requests
import paho.mqtt.client as mqtt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "attack"))
from hubproc import free_port  # noqa: E402

USER, PASSWORD = "owner", "a long owner password"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
UP_S = 30          # a hub that does not answer /api/health within this after a cut fails
KEY_LEN = 32

# The hub's files, as LazyFS sees them (paths in the backing directory, which ends in
# home/data). LazyFS reads a command in one read of at most 100 bytes: keep them short.
# Aimed crashes of the first start: (what, crash faults armed together, how, models). A
# fault is (LazyFS operation, regex on the path; for two-path operations, rename and link,
# on the new name); LazyFS crashes after the first operation that matches any of them, so
# one moment can be named for more than one way of writing the files (in place, beside
# and renamed, or in a staging directory). How: "start" arms before the hub starts,
# "setup" after a first start and a cut, then creates the owner; "served" cuts right after
# the hub first hands out its CA, "early" a few milliseconds after the start. Most are tried
# under both models. The first ones are those where a crash once found a hub that did not
# keep its promise; "CA handed out" under the strict model races the hub's first fsync of
# its data directory (SQLite does one, as a side effect, soon after the start), so it is
# tried several times.
BOTH, STRICT = (False, True), (True,)
KEY, CA_KEY, CA_PEM = r"data/hub\.key", r"data/tls[^/]*/ca\.key", r"data/tls[^/]*/ca\.pem"
AIMED = [
    ("hub.key created", [("create", KEY)], "start", BOTH),
    ("CA key in place", [("rename", r"data/tls/ca\.key$"), ("fsync", r"data/tls\.new/ca\.key$")], "start", BOTH),
    ("CA handed out", [], "served", BOTH),
    ("setup-code removed", [("unlink", r"data/setup-code$")], "setup", BOTH),
    ("CA handed out", [], "served", STRICT),
    ("hub.key written", [("write", KEY)], "start", BOTH),
    ("hub.key synced", [("fsync", KEY)], "start", BOTH),
    ("hub.key in place", [("link", KEY + "$"), ("rename", KEY + "$"), ("fsync", KEY + "$")], "start", BOTH),
    ("CA handed out", [], "served", STRICT),
    ("CA key written", [("write", CA_KEY)], "start", BOTH),
    ("CA certificate synced", [("fsync", CA_PEM)], "start", BOTH),
    ("CA in place", [("rename", r"data/tls/ca\.pem$"), ("rename", r"data/tls$")], "start", BOTH),
    ("CA handed out", [], "served", STRICT),
    ("server key in place", [("rename", r"data/tls/server\.key$")], "start", BOTH),
    ("server certificate in place", [("rename", r"data/tls/server\.pem$")], "start", BOTH),
    ("setup-code created", [("create", r"data/setup-code")], "start", BOTH),
    ("setup-code synced", [("fsync", r"data/setup-code")], "start", BOTH),
    ("setup-code in place", [("rename", r"data/setup-code$"), ("fsync", r"data/setup-code$")], "start", BOTH),
    ("database created", [("create", r"data/hearth\.db$")], "start", BOTH),
    ("WAL synced", [("fsync", r"data/hearth\.db-wal")], "start", BOTH),
    ("a few ms after start", [], "early", BOTH),
]
# The aimed cycles in order: (entry, strict), round after round.
SCHEDULE = [(entry, strict) for entry in AIMED for strict in entry[3]]
# Share of the cuts and of the time each phase gets.
PHASES = [("aimed", 0.45), ("setup", 0.15), ("load", 0.22), ("restart", 0.18)]


class HarnessError(Exception):
    """The soak itself cannot go on (LazyFS does not mount...): not a finding about the hub."""


class Stopped(HarnessError):
    """SIGTERM (tests/powercut/run's `timeout`)."""


def model(strict):
    return "strict" if strict else "upstream"


def clean_env():
    # The hub reads HUB_* over its file: none of the caller's.
    return {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}


def tail(path, n=12):
    try:
        lines = ANSI.sub("", open(path, errors="replace").read()).splitlines()
    except OSError:
        return []
    return lines[-n:]


def session(verify=True):
    """A requests session that ignores the environment (proxies, REQUESTS_CA_BUNDLE): it
    talks to a hub on loopback and trusts exactly the CA it is given."""
    s = requests.Session()
    s.trust_env = False
    s.verify = verify
    return s


def get(url, **kw):
    with session(kw.pop("verify", True)) as s:
        return s.get(url, **kw)


def fingerprint(pem):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


class Run:
    def __init__(self, args):
        self.binary, self.lazyfs, self.work = args.binary, args.lazyfs, args.work
        self.mnt = os.path.join(self.work, "mnt")
        os.makedirs(self.mnt, exist_ok=True)
        self.pids = open(os.path.join(self.work, "pids"), "a")
        self.mounts = 0
        self.lineages = 0
        self.kept = []
        self.live = set()  # lineages not closed yet, for the clean-up on the way out

    def started(self, proc):
        """Notes a process this soak started, for tests/powercut/run's clean-up."""
        self.pids.write(f"{proc.pid}\n")
        self.pids.flush()


class Phase:
    def __init__(self, name, cuts, deadline):
        self.name, self.max_cuts, self.deadline = name, cuts, deadline
        self.cuts = self.acked = self.lost = 0
        self.failures = []  # (reason, detail)
        self.warnings = []

    def more(self, cuts_per_cycle=1):
        return self.cuts + cuts_per_cycle <= self.max_cuts and time.monotonic() < self.deadline

    def fail(self, reason, detail):
        self.failures.append((reason, detail))
        print(f"    FAIL {reason}: {detail}")


class Mount:
    """One LazyFS mount of a lineage's backing directory on the run's mount point."""

    def __init__(self, run, backing, strict):
        run.mounts += 1
        self.run, self.backing, self.strict = run, backing, strict
        self.dir = os.path.join(run.work, f"mount-{run.mounts}")
        os.makedirs(self.dir)
        self.fifo, self.done = os.path.join(self.dir, "faults.fifo"), os.path.join(self.dir, "done.fifo")
        self.log = os.path.join(self.dir, "lazyfs.log")
        os.mkfifo(self.fifo)
        os.mkfifo(self.done)
        self.stash = os.path.join(self.dir, "stash")
        os.mkdir(self.stash)
        self.cfg = os.path.join(self.dir, "lazyfs.toml")
        open(self.cfg, "w").write(f"""[faults]
fifo_path="{self.fifo}"
fifo_path_completed="{self.done}"
[cache]
apply_eviction=false
[cache.simple]
custom_size="256mb"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile="{self.log}"
""")
        self.proc = None
        self.done_fd = None

    def start(self):
        # LazyFS opens the completion FIFO for writing, blocking, before it takes commands.
        self.done_fd = os.open(self.done, os.O_RDONLY | os.O_NONBLOCK)
        env = clean_env()
        if self.strict:
            env["LAZYFS_DIRENT_STASH"] = self.stash
        self.proc = subprocess.Popen(
            [self.run.lazyfs, self.run.mnt, "--config-path", self.cfg, "-o", "allow_other",
             "-o", "modules=subdir", "-o", f"subdir={self.backing}", "-f"],
            stdout=open(os.path.join(self.dir, "out"), "w"), stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        self.run.started(self.proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"LazyFS exited ({self.proc.returncode}) while mounting: "
                                   + " | ".join(tail(self.log, 5) + tail(os.path.join(self.dir, "out"), 5)))
            if "waiting for fault commands" in self.text() and os.path.ismount(self.run.mnt):
                return
            time.sleep(0.02)
        raise HarnessError("LazyFS did not mount within 30 s: " + " | ".join(tail(self.log, 5)))

    def text(self):
        try:
            return open(self.log, errors="replace").read()
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self, line):
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)  # LazyFS holds it open: never blocks
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def arm(self, op, regex):
        """An aimed crash: LazyFS kills itself right after `op` on a path matching `regex`
        (for rename and link, the new name), dropping what was not synced."""
        seen = len(self.text())
        # For two-path operations LazyFS matches the new name against to_rgx, and only when
        # from_rgx is given (and does not match "none"); `tmp` is short and never does.
        paths = f"from_rgx=tmp::to_rgx={regex}" if op in ("rename", "link") else f"from_rgx={regex}"
        line = f"lazyfs::crash::timing=after::op={op}::{paths}"
        if len(line) + 1 >= 100:
            raise HarnessError(f"crash fault command too long for LazyFS's 100-byte read: {line}")
        self.command(line)
        # Taken one at a time: wait until it was read, so no later command joins it.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = self.text()[seen:]
            if "INVALID crash fault" in text:
                raise HarnessError(f"LazyFS refused the crash fault: {line}")
            if f"regex path = {regex}\n" in text:
                return
            time.sleep(0.01)
        raise HarnessError(f"LazyFS did not take the crash fault as sent ({line}) within 5 s: "
                           + " | ".join(self.text()[seen:].splitlines()[-4:]))

    def crashed(self):
        return "Triggered fault condition" in self.text()

    def clear_cache(self):
        """Drops everything not synced (and, strict, undoes unsynced names); False if LazyFS
        did not confirm within 20 s."""
        try:
            self.command("lazyfs::clear-cache")
        except OSError:
            return False
        got, deadline = b"", time.monotonic() + 20
        while b"finished::clear-cache" not in got and time.monotonic() < deadline:
            ready, _, _ = select.select([self.done_fd], [], [], 0.2)
            if ready:
                try:
                    got += os.read(self.done_fd, 4096)
                except BlockingIOError:
                    pass
        return b"finished::clear-cache" in got

    def unmount(self):
        subprocess.run(["fusermount3", "-u", "-z", self.run.mnt], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.done_fd is not None:
            os.close(self.done_fd)
            self.done_fd = None
        if os.path.ismount(self.run.mnt):
            raise HarnessError(f"{self.run.mnt} is still mounted")

    def reverted(self):
        """What the strict model undid at the cut, relative to the backing directory."""
        out = []
        for kind, path in re.findall(r"\[dirent\] power cut (drops unsynced new name|undoes unsynced rename"
                                     r"|brings back unsynced removal of) (\S+)", self.text()):
            rel = os.path.relpath(path, self.backing)
            verb = {"drops unsynced new name": "dropped", "undoes unsynced rename": "unrenamed"}.get(kind, "restored")
            if rel.endswith((".tmp", "-shm", "-journal")) or ".fuse_hidden" in rel:
                continue
            out.append(f"{verb} {rel}")
        return out


class Hub:
    """One run of the hub binary; its configuration and log stay outside the mount."""

    def __init__(self, lineage):
        self.lin, self.run = lineage, lineage.run
        lineage.starts += 1
        self.http, self.https, self.mqtt = free_port(), free_port(), free_port()
        self.conf = os.path.join(lineage.dir, f"hub-{lineage.starts}.toml")
        open(self.conf, "w").write(f"""data_dir = "{lineage.data}"
[http]
listen = "127.0.0.1:{self.http}"
tls_listen = "127.0.0.1:{self.https}"
tls = true
[mqtt]
listen = "127.0.0.1:{self.mqtt}"
tls_listen = "127.0.0.1:0"
plain_from_loopback = true
[coap]
dtls_listen = "127.0.0.1:0"
""")
        self.log = os.path.join(lineage.dir, f"hub-{lineage.starts}.log")
        self.proc = subprocess.Popen([self.run.binary, "--config", self.conf], stdout=open(self.log, "w"),
                                     stderr=subprocess.STDOUT, env=clean_env(), cwd=lineage.dir,
                                     start_new_session=True)
        self.run.started(self.proc)
        self.plain = f"http://127.0.0.1:{self.http}"
        self.base = f"https://localhost:{self.https}"

    def wait_up(self, seconds, mount):
        """'up', 'exited', 'fs-crashed' (LazyFS is gone) or 'timeout'."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "exited"
            if not mount.alive():
                return "fs-crashed"
            try:
                if get(self.plain + "/api/health", timeout=1).ok:
                    return "up"
            except requests.RequestException:
                pass
            time.sleep(0.02)
        return "timeout"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"the hub (pid {self.proc.pid}) did not die of SIGKILL within 20 s")

    def stop(self):
        """A clean stop (SIGTERM), SIGKILL after 20 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def error(self):
        lines = tail(self.log, 40)
        errs = [line for line in lines if re.search(r"error|Error|panicked", line)]
        return (errs or lines or ["(empty log)"])[-1].strip().replace(self.lin.data, "data")[:400]


class Publisher(threading.Thread):
    """A device publishing QoS 1 readings until `stop`, at most `window` unacknowledged;
    what the hub acknowledges goes to the lineage's record."""

    def __init__(self, lineage, device, metrics, window, port, stop, seconds=30):
        super().__init__(daemon=True)
        self.lin, self.device, self.metrics, self.window, self.port, self.stop = \
            lineage, device, metrics, window, port, stop
        self.seconds = seconds
        self.pending = []
        self.client = None
        self.problem = None

    def run(self):
        try:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{self.device['id']}-{time.monotonic_ns()}",
                            protocol=mqtt.MQTTv311, clean_session=True)
            c.username_pw_set(self.device["id"], self.device["secret"])
            c.max_inflight_messages_set(self.window)
            c.reconnect_delay_set(60, 60)  # never back to a hub that died under it
            self.client = c
            c.connect("127.0.0.1", self.port, keepalive=30)
            c.loop_start()
        except Exception as e:  # noqa: BLE001 - reported by the cycle
            self.problem = f"connect: {e}"
            return
        deadline = time.monotonic() + self.seconds
        while not c.is_connected() and time.monotonic() < deadline and not self.stop.is_set():
            time.sleep(0.01)
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline and c.is_connected():
            while len(self.pending) < self.window and not self.stop.is_set():
                metric = self.metrics[n % len(self.metrics)]
                n += 1
                ts, value = self.lin.next_reading(self.device["id"], metric)
                info = c.publish(f"hearth/{self.device['id']}/{metric}", json.dumps({"value": value, "ts": ts}), qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                self.pending.append((info, metric, ts, value))
            self.sweep()
            time.sleep(0.002)

    def sweep(self):
        done, waiting = [], []
        for p in self.pending:
            (done if p[0].is_published() else waiting).append(p)
        self.pending = waiting
        if done:
            self.lin.acknowledged(self.device["id"], [(m, ts, v) for _, m, ts, v in done])

    def finish(self):
        """After the hub was killed: what it acknowledged before it died counts."""
        self.join(timeout=15)
        self.sweep()
        if self.client is not None:
            self.client.loop_stop()


class Lineage:
    """One data directory (a backing directory on the real disk) through its mounts, hub
    starts and cuts, with what the hub promised so far."""

    def __init__(self, run, phase, first_strict):
        run.lineages += 1
        self.run, self.phase = run, phase
        self.dir = os.path.join(run.work, f"lineage-{run.lineages}")
        self.backing = os.path.join(self.dir, "backing")
        os.makedirs(self.backing)
        self.data = os.path.join(run.mnt, "home", "data")
        self.next_strict = first_strict
        self.mount = self.hub = None
        self.starts = 0
        self.context = ""
        # Promises.
        self.key = None          # the hub key's bytes at the last good check
        self.ca_pem = None       # the CA certificate handed out
        self.owner = False       # the owner was created and that was acknowledged
        self.devices = []        # devices whose creation was acknowledged
        self.acked = {}          # (device, metric) -> {ts: value}
        self.acked_count = 0
        self.last_ts = {}
        self.lock = threading.Lock()
        self.acks = open(os.path.join(self.dir, "acked.jsonl"), "a")
        self.session = None
        self.failed = False
        self.after_cut = []
        self.new_key = self.served = self.verify = None
        run.live.add(self)

    # --- mounts and cuts ---
    def mount_next(self):
        first = self.mount is None
        self.mount = Mount(self.run, self.backing, self.next_strict)
        self.next_strict = not self.next_strict
        self.mount.start()
        if first:
            home = os.path.join(self.run.mnt, "home")
            os.mkdir(home)
            for d in (home, self.run.mnt):
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                os.fsync(fd)
                os.close(fd)

    def start_hub(self):
        self.hub = Hub(self)
        self.session = None
        return self.hub

    def cut(self):
        """A power cut: the hub dies, LazyFS drops what was not synced, the disk is unmounted."""
        self.hub.kill()
        if self.mount.alive():
            if not self.mount.clear_cache():
                self.phase.warnings.append(f"{self.context}: LazyFS did not confirm clear-cache; killed it")
                self.mount.proc.kill()
        self.after_cut = self.mount.reverted() + self.disk_facts()
        self.mount.unmount()
        self.phase.cuts += 1

    def disk_facts(self):
        """What the backing directory holds after the cut, as far as the checks care."""
        data = os.path.join(self.backing, "home", "data")
        if not os.path.isdir(data):
            return ["on disk: no data directory"]
        facts = []
        key = os.path.join(data, "hub.key")
        if not os.path.exists(key):
            facts.append("on disk: no hub.key")
        elif os.path.getsize(key) != KEY_LEN:
            facts.append(f"on disk: hub.key is {os.path.getsize(key)} bytes")
        tls = os.path.join(data, "tls")
        if not os.path.isdir(tls):
            facts.append("on disk: no tls/")
        else:
            have = [f for f in ("ca.key", "ca.pem") if os.path.exists(os.path.join(tls, f))]
            if len(have) == 1:
                facts.append(f"on disk: tls/{have[0]} alone")
            for f in have:
                if os.path.getsize(os.path.join(tls, f)) == 0:
                    facts.append(f"on disk: tls/{f} is empty")
        if os.path.exists(os.path.join(data, "setup-code")):
            facts.append("on disk: setup-code")
        return facts

    def close(self):
        if self.hub is not None and self.hub.proc.poll() is None:
            self.hub.kill()
        if self.mount is not None and self.mount.alive():
            self.mount.unmount()
        elif self.mount is not None and os.path.ismount(self.run.mnt):
            self.mount.unmount()
        self.acks.close()
        self.run.live.discard(self)
        if self.failed and len(self.run.kept) < 5:
            self.run.kept.append(self.dir)
        else:
            shutil.rmtree(self.backing, ignore_errors=True)

    # --- talking to the hub ---
    def handed_out(self):
        """The CA the hub hands out (plain HTTP /hearth-ca.pem): from now on it is promised."""
        pem = get(self.hub.plain + "/hearth-ca.pem", timeout=5).text
        fingerprint(pem)
        if self.ca_pem is None:
            self.ca_pem = pem
        return pem

    def first_hand_out(self, seconds):
        """Asks for the CA every few milliseconds until the hub hands it out; False if the
        hub or LazyFS died, or `seconds` passed, first."""
        deadline = time.monotonic() + seconds
        with session() as s:
            while time.monotonic() < deadline and self.hub.proc.poll() is None and self.mount.alive():
                try:
                    r = s.get(self.hub.plain + "/hearth-ca.pem", timeout=1)
                    if r.ok and "BEGIN CERTIFICATE" in r.text:
                        self.ca_pem = self.ca_pem or r.text
                        return True
                except requests.RequestException:
                    pass
                time.sleep(0.003)
        return False

    def bundle(self, pem):
        path = os.path.join(self.dir, f"ca-{fingerprint(pem)[:16]}.pem")
        if not os.path.exists(path):
            open(path, "w").write(pem)
        return path

    def setup(self, timeout=30):
        """Creates the owner; True if the hub acknowledged it (201)."""
        code = open(os.path.join(self.data, "setup-code")).read().strip()
        verify = self.bundle(self.handed_out())
        s = session(verify)
        r = s.post(self.hub.base + "/api/setup", json={"code": code, "username": USER, "password": PASSWORD},
                   timeout=timeout)
        if r.status_code == 201:
            self.owner = True
            self.session = s
            return True
        return False

    def add_devices(self):
        for name, metrics, window in (("bulk-a", ["energy"], 200), ("bulk-b", ["temp", "hum"], 100),
                                      ("single", ["power"], 1)):
            r = self.session.post(self.hub.base + "/api/devices", json={"name": name}, timeout=30)
            if r.status_code != 201:
                raise HarnessError(f"adding a device: {r.status_code} {r.text[:200]}")
            d = r.json()
            self.devices.append({"id": d["id"], "secret": d["secret"], "metrics": metrics, "window": window})

    def next_reading(self, device, metric):
        with self.lock:
            ts = max(int(time.time() * 1000) - 60_000, self.last_ts.get((device, metric), 0) + 1)
            self.last_ts[(device, metric)] = ts
        return ts, round(random.uniform(-1000, 1000), 3)

    def acknowledged(self, device, readings):
        with self.lock:
            series = None
            for metric, ts, value in readings:
                series = self.acked.setdefault((device, metric), {})
                series[ts] = value
                self.acks.write(json.dumps({"device": device, "metric": metric, "ts": ts, "value": value}) + "\n")
            self.acks.flush()
            self.acked_count += len(readings)
            self.phase.acked += len(readings)

    def publish_some(self, count=5, seconds=5):
        """The one-at-a-time device publishes until `count` more readings were acknowledged
        (or `seconds` passed): a hub that holds data."""
        stop, before = threading.Event(), self.acked_count
        ps = self.publishers(stop, only=[self.devices[-1]["id"]], seconds=seconds)
        deadline = time.monotonic() + seconds
        while self.acked_count < before + count and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        for p in ps:
            p.finish()

    def publishers(self, stop, only=None, seconds=30):
        ps = [Publisher(self, d, d["metrics"], d["window"], self.hub.mqtt, stop, seconds)
              for d in self.devices if only is None or d["id"] in only]
        for p in ps:
            p.start()
        return ps

    # --- the check after a cut ---
    def check(self):
        """After a cut, a remount and a start: does the hub keep what it promised? Records
        failures in the phase; True if none."""
        fails = []
        state = self.hub.wait_up(UP_S, self.mount)
        if state != "up":
            why = {"exited": f"it exited ({self.hub.proc.returncode})", "timeout": f"no answer in {UP_S} s",
                   "fs-crashed": "LazyFS died"}[state]
            fails.append(("hub does not start after cut", f"{why}: {self.hub.error()}"))
            print(f"    hub log ({self.hub.log}):")
            for line in tail(self.hub.log, 8):
                print(f"      | {line[:200]}")
            return self.verdict(fails)
        try:
            self.check_files_and_ca(fails)
            self.check_owner_and_readings(fails)
        except requests.RequestException as e:
            fails.append(("hub does not answer after cut", f"{type(e).__name__}: {str(e)[:200]}"))
        return self.verdict(fails)

    def check_files_and_ca(self, fails):
        try:
            key = open(os.path.join(self.data, "hub.key"), "rb").read()
        except FileNotFoundError:
            key = None
        if self.key is not None and key != self.key:
            fails.append(("hub key not the same as before the cut",
                          "gone" if key is None else f"{len(key)} bytes, other than before"))
        served = get(self.hub.plain + "/hearth-ca.pem", timeout=5).text
        self.verify = self.bundle(served)
        if self.ca_pem is not None and fingerprint(served) != fingerprint(self.ca_pem):
            fails.append(("CA replaced", f"{fingerprint(self.ca_pem)[:16]} became {fingerprint(served)[:16]}"))
            try:  # what a client that trusts the promised CA sees
                get(self.hub.base + "/api/health", verify=self.bundle(self.ca_pem), timeout=5)
            except requests.exceptions.SSLError:
                pass
        self.new_key = key
        self.served = served

    def check_owner_and_readings(self, fails):
        s = session(self.verify)
        required = s.get(self.hub.base + "/api/setup", timeout=10).json()["setup_required"]
        code = os.path.exists(os.path.join(self.data, "setup-code"))
        if code and not required:
            fails.append(("setup-code present while an owner exists", "the used-up code came back"))
        if required and not code:
            fails.append(("setup-code missing while no owner exists", "nobody can set the hub up"))
        if self.owner and required:
            fails.append(("owner lost", "the hub asks for setup again"))
        if not required:
            r = s.post(self.hub.base + "/api/login", json={"username": USER, "password": PASSWORD}, timeout=30)
            if r.status_code != 200:
                fails.append(("owner cannot log in", f"{r.status_code} {r.text[:120]}"))
                return
            self.session = s
        if not self.acked and not self.devices:
            return
        if required:
            lost = self.acked_count
            if lost:
                self.phase.lost += lost
                fails.append(("acknowledged readings lost", f"all {lost} (no owner)"))
            return
        listed = {d["id"] for d in s.get(self.hub.base + "/api/devices", timeout=30).json()}
        gone = [d["id"] for d in self.devices if d["id"] not in listed]
        if gone:
            fails.append(("acknowledged device lost", ", ".join(gone)))
        lost, examples = 0, []
        for (device, metric), series in sorted(self.acked.items()):
            got = self.readings(s, device, metric, min(series), max(series) + 1, fails)
            if got is None:
                continue
            missing = [ts for ts, v in series.items() if ts not in got or abs(float(got[ts]) - v) > 1e-6]
            lost += len(missing)
            examples += [f"{device[:8]}/{metric}@{ts}" for ts in sorted(missing)[:2]]
        if lost:
            self.phase.lost += lost
            fails.append(("acknowledged readings lost", f"{lost} of {self.acked_count}, e.g. {', '.join(examples[:4])}"))

    def readings(self, s, device, metric, lo, hi, fails):
        """A series' readings in [lo, hi) as {ts: value}, page by page (the hub answers at
        most so many at once and says when it stopped short); None if it cannot be read."""
        got = {}
        for _ in range(1000):
            r = s.get(self.hub.base + f"/api/devices/{device}/metrics/{metric}/readings?from={lo}&to={hi}", timeout=60)
            if r.status_code == 404:
                return got
            if r.status_code != 200:
                fails.append(("readings not readable", f"{device}/{metric}: {r.status_code} {r.text[:120]}"))
                return None
            body = r.json()
            page = body.get("readings") or []
            got.update((p["ts"], p["value"]) for p in page)
            if not body.get("truncated") or not page:
                return got
            lo = max(p["ts"] for p in page) + 1
        return got

    def ok(self, note=""):
        facts = "; ".join(self.after_cut[:4])
        print(f"    ok{note}" + (f" [after the cut: {facts}]" if facts else ""))

    def verdict(self, fails):
        for reason, detail in fails:
            facts = "; ".join(self.after_cut[:6])
            self.phase.fail(reason, f"{self.context}: {detail}" + (f" [after the cut: {facts}]" if facts else ""))
        if fails:
            self.failed = True
            return False
        # Good: what the hub has now is what it must keep from here on.
        if self.new_key is not None:
            self.key = self.new_key
        self.ca_pem = self.served
        if self.session is not None:
            self.owner = True
        return True


# --- the phases ---
def first_start_cycle(run, ph, i):
    (what, faults, how, _), crash_strict = SCHEDULE[i % len(SCHEDULE)]
    prelude = how == "setup"  # the setup code is removed by setup: a hub that started once
    lin = Lineage(run, ph, crash_strict if not prelude else not crash_strict)
    lin.context = f"aimed #{i + 1} {model(crash_strict)}, {what}"
    print(f"  {lin.context}")
    try:
        lin.mount_next()
        if prelude:
            hub = lin.start_hub()
            if hub.wait_up(UP_S, lin.mount) != "up":
                ph.fail("hub does not start on an empty disk", hub.error())
                return
            lin.cut()
            lin.mount_next()
            lin.start_hub()
            if not lin.check():
                return
        else:
            for op, regex in faults:
                lin.mount.arm(op, regex)
        hub = lin.start_hub()
        if how == "early":
            time.sleep(random.uniform(0.002, 0.3))
        elif how == "served":
            # As early as a browser could: the CA is asked for until the hub hands it out.
            if lin.first_hand_out(UP_S):
                time.sleep(random.uniform(0, 0.02))
        elif prelude:
            if hub.wait_up(UP_S, lin.mount) == "up":
                for op, regex in faults:
                    lin.mount.arm(op, regex)
                try:
                    lin.setup(timeout=15)
                except requests.RequestException:
                    pass
        else:
            state = hub.wait_up(UP_S, lin.mount)
            deadline = time.monotonic() + 2
            while state == "up" and lin.mount.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
        if faults and not lin.mount.crashed():
            ph.warnings.append(f"{lin.context}: the aimed crash did not happen (cut instead)")
        lin.cut()
        lin.mount_next()
        lin.start_hub()
        if lin.check():
            lin.ok()
    finally:
        lin.close()


def setup_cycle(run, ph, i):
    # Even cycles: the owner is created on the first start of a fresh disk. Odd ones: on the
    # second, after a cut that made the first start's files durable.
    early = i % 2 == 0
    first_strict = (i // 2) % 2 == 1
    lin = Lineage(run, ph, first_strict)
    setup_strict = first_strict if early else not first_strict
    print(f"  setup #{i + 1} {model(setup_strict)}, owner created on the {'first' if early else 'second'} start")
    try:
        lin.mount_next()
        hub = lin.start_hub()
        if hub.wait_up(UP_S, lin.mount) != "up":
            ph.fail("hub does not start on an empty disk", hub.error())
            return
        if not early:
            lin.context = f"setup #{i + 1} {model(lin.mount.strict)}, cut after the first start"
            lin.cut()
            lin.mount_next()
            lin.start_hub()
            if not lin.check():
                return
        lin.context = f"setup #{i + 1} {model(lin.mount.strict)}, owner created"
        answered = threading.Event()

        def create():
            try:
                lin.setup(timeout=20)
            except requests.RequestException:
                pass
            answered.set()
        threading.Thread(target=create, daemon=True).start()
        # Mostly after the answer, sometimes while the request is in flight.
        if random.random() < 0.7:
            answered.wait(20)
            time.sleep(random.uniform(0, 0.3))
        else:
            time.sleep(random.uniform(0, 0.6))
        lin.cut()
        answered.wait(20)
        lin.context += ", acknowledged" if lin.owner else ", not acknowledged"
        lin.mount_next()
        lin.start_hub()
        if lin.check():
            lin.ok()
    finally:
        lin.close()


def prepared(run, ph, first_strict=False):
    """A lineage with an owner, three devices and some acknowledged readings, its hub up.
    It starts on the upstream model: what a first start leaves behind is the aimed and setup
    phases' business; these lineages are about what a hub holding data does."""
    lin = Lineage(run, ph, first_strict)
    lin.context = f"{ph.name}: preparing"
    lin.mount_next()
    hub = lin.start_hub()
    if hub.wait_up(UP_S, lin.mount) != "up":
        lin.close()
        raise HarnessError(f"the hub does not start on an empty disk: {hub.error()}")
    if not lin.setup():
        lin.close()
        raise HarnessError("setting the hub up failed")
    lin.add_devices()
    lin.publish_some()
    return lin


def load_cycles(run, ph):
    lin, n = None, 0
    try:
        while ph.more() and n < 10_000:
            # A fresh disk now and then: the check reads back every acknowledged reading.
            if lin is None or lin.failed or lin.starts > 8 or lin.acked_count > 100_000:
                if lin is not None:
                    lin.close()
                lin = prepared(run, ph)
            n += 1
            lin.context = f"load #{n} {model(lin.mount.strict)}"
            stop = threading.Event()
            before = lin.acked_count
            ps = lin.publishers(stop)
            time.sleep(random.uniform(0.3, 4))
            lin.hub.kill()  # the cut's first half: the acknowledgements it sent before it died count
            stop.set()
            for p in ps:
                p.finish()
                if p.problem:
                    ph.warnings.append(f"{lin.context}: {p.device['id'][:8]}: {p.problem}")
            lin.cut()
            lin.context += f", {lin.acked_count - before} acknowledged this cycle"
            print(f"  {lin.context}")
            lin.mount_next()
            lin.start_hub()
            if lin.check():
                lin.ok(f" ({lin.acked_count} acknowledged readings all there)")
    finally:
        if lin is not None:
            lin.close()


def restart_cycles(run, ph):
    lin, n = None, 0
    try:
        while ph.more() and n < 10_000:
            if lin is None or lin.failed or lin.starts > 12:
                if lin is not None:
                    lin.close()
                lin = prepared(run, ph)
            n += 1
            # A few more readings, then a clean stop and a start with a cut in its first 2 s.
            lin.publish_some()
            lin.hub.stop()
            lin.start_hub()
            after = random.uniform(0, 2)
            lin.context = f"restart #{n} {model(lin.mount.strict)}, cut {after * 1000:.0f} ms into the start"
            print(f"  {lin.context}")
            time.sleep(after)
            lin.cut()
            lin.mount_next()
            lin.start_hub()
            if lin.check():
                lin.ok()
    finally:
        if lin is not None:
            lin.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--lazyfs", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--budget", type=float, default=600, help="seconds; no new cycle starts after")
    ap.add_argument("--cuts", type=int, default=100, help="most power cuts in all")
    args = ap.parse_args()
    run = Run(args)
    # `timeout` stops the soak with SIGTERM: clean up and say what was found on the way out.
    def stopped(*_):
        raise Stopped("stopped by SIGTERM")
    signal.signal(signal.SIGTERM, stopped)
    started = time.monotonic()
    end = started + args.budget
    phases, harness = [], None
    try:
        left_share = sum(share for _, share in PHASES)
        for name, share in PHASES:
            now = time.monotonic()
            cuts_left = args.cuts - sum(p.cuts for p in phases)
            ph = Phase(name, round(cuts_left * share / left_share), now + max(0, end - now) * share / left_share)
            left_share -= share
            phases.append(ph)
            print(f"== {name}: up to {ph.max_cuts} cuts, {max(0, ph.deadline - now):.0f} s")
            if name == "aimed":
                i = 0
                while ph.more(2 if SCHEDULE[i % len(SCHEDULE)][0][2] == "setup" else 1) and i < 10_000:
                    first_start_cycle(run, ph, i)
                    i += 1
            elif name == "setup":
                i = 0
                while ph.more(1 if i % 2 == 0 else 2) and i < 10_000:
                    setup_cycle(run, ph, i)
                    i += 1
            elif name == "load":
                load_cycles(run, ph)
            else:
                restart_cycles(run, ph)
    except HarnessError as e:
        harness = str(e)
        print(f"HARNESS ERROR: {e}")
    finally:
        for lin in list(run.live):
            try:
                lin.close()
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                print(f"clean-up of {lin.dir}: {e}")
    minutes = (time.monotonic() - started) / 60
    # A cut under load proves something only if readings were acknowledged before it.
    for ph in phases:
        if ph.name in ("load", "restart") and ph.cuts and not ph.acked:
            ph.fail("nothing acknowledged", f"{ph.cuts} cuts, but the hub acknowledged no reading before any of them")
    print("\n== results")
    for ph in phases:
        print(f"{ph.name}: {ph.cuts} cuts, {ph.acked} acknowledged readings, {ph.lost} lost, "
              f"{len(ph.failures)} failures")
        reasons = {}
        for reason, detail in ph.failures:
            reasons.setdefault(reason, []).append(detail)
        for reason, details in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            print(f"  {len(details)} x {reason}")
            for d in details[:3]:
                print(f"      {d[:400]}")
        for w in ph.warnings[:5]:
            print(f"  warning: {w}")
        if len(ph.warnings) > 5:
            print(f"  ({len(ph.warnings) - 5} more warnings)")
    for d in run.kept:
        print(f"kept for a look: {d}")
    cuts = sum(p.cuts for p in phases)
    failures = sum(len(p.failures) for p in phases)
    lost = sum(p.lost for p in phases)
    acked = sum(p.acked for p in phases)
    bad = failures or lost or harness
    print(f"powercut: {'FAIL' if bad else 'ok'}: {cuts} cuts in {minutes:.1f} min ({cuts / max(minutes, 1e-9):.1f}/min), "
          f"{acked} acknowledged readings, {lost} lost, {failures} failures"
          + (f", harness error: {harness}" if harness else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
