"""Starts a hub binary for the black-box checks: loopback only, a fresh data directory,
stopped when the script exits."""
import atexit, os, socket, subprocess, tempfile, time, requests


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
