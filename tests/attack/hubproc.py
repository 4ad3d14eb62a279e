"""Starts a hub binary for the black-box checks: loopback only, a fresh data directory,
stopped when the script exits."""
import atexit, os, re, socket, ssl, struct, subprocess, tempfile, threading, time, requests


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def start(binary, mqtt_port=0, extra="", tls=False, mqtts_port=0, plain_from_loopback=True):
    """Runs `binary` until the script ends, with `extra` appended to its configuration;
    returns (base URL, data directory). Without `tls`, the UI and API are in clear (the
    checks written before TLS); with it, as in a home: HTTPS, and `requests` trusts the
    hub's CA (and nothing else)."""
    work = tempfile.mkdtemp()
    http, https = free_port(), free_port()
    conf = os.path.join(work, "hub.toml")
    open(conf, "w").write(f"""data_dir = "{work}/data"
[http]
listen = "127.0.0.1:{http}"
tls_listen = "127.0.0.1:{https}"
tls = {str(tls).lower()}
[mqtt]
listen = "127.0.0.1:{mqtt_port}"
tls_listen = "127.0.0.1:{mqtts_port}"
plain_from_loopback = {str(plain_from_loopback).lower()}
[coap]
dtls_listen = "127.0.0.1:0"
""" + extra)
    # Its log (stdout) and its errors (stderr), for scripts that look at them.
    hub = subprocess.Popen([binary, "--config", conf], stdout=open(os.path.join(work, "out"), "w"),
                           stderr=open(os.path.join(work, "log"), "w"))
    atexit.register(lambda: hub.poll() is None and (hub.terminate(), hub.wait(timeout=30)))
    for _ in range(200):
        try:
            if requests.get(f"http://127.0.0.1:{http}/api/health", timeout=1).ok: break
        except Exception: time.sleep(0.05)
    data = os.path.join(work, "data")
    if not tls:
        return f"http://127.0.0.1:{http}", data
    os.environ["REQUESTS_CA_BUNDLE"] = os.path.join(data, "tls", "ca.pem")
    return f"https://localhost:{https}", data


def dtls_port(data):
    """The port the hub started with `start` (its data directory `data`) serves CoAP over
    DTLS on, read from its log (it binds port 0)."""
    log = os.path.join(os.path.dirname(data), "out")
    for _ in range(100):
        text = re.sub(r"\x1b\[[0-9;]*m", "", open(log).read())
        m = re.search(r"CoAP over DTLS listening.*?127\.0\.0\.1:(\d+)", text)
        if m: return int(m.group(1))
        time.sleep(0.05)
    raise SystemExit("no DTLS port in the hub's log")


def idle_flood(port, stop, count=600, source="127.0.0.2"):
    """Keeps `count` idle connections open to `port` from `source`, re-opening those the hub
    closes, until `stop` is set (at most 20,000 connections). Runs in a thread; returns the
    thread and a list that holds how many it opened once it ends."""
    opened_box = []
    def run():
        held, opened = [], 0
        while not stop.is_set() and opened < 20000:
            held = [s for s in held if s.fileno() != -1]
            while len(held) < count and opened < 20000 and not stop.is_set():
                try:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=1, source_address=(source, 0)))
                except OSError:
                    break
                opened += 1
            # Drop the ones the hub closed.
            for s in held:
                s.setblocking(False)
                try:
                    if s.recv(1) == b"": s.close()
                except (BlockingIOError, ssl.SSLError):
                    pass
                except OSError:
                    s.close()
            time.sleep(0.05)
        for s in held: s.close()
        opened_box.append(opened)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, opened_box


def hub_pid(data):
    """The process id of the hub `start` ran with the data directory `data` (found by its
    configuration file on its command line), for scripts that read /proc/<pid>."""
    conf = os.path.join(os.path.dirname(data), "hub.toml").encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if conf in args:
            return int(entry)
    raise SystemExit(f"no hub running with {conf.decode()}")


# --- Raw MQTT 3.1.1, for scripts that speak it byte by byte ---
def remaining(n):
    """An MQTT remaining-length field."""
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)


def utf8(s):
    """An MQTT string: its length, then its UTF-8 bytes."""
    b = s.encode(); return struct.pack(">H", len(b)) + b

