"""Black-box: a CoAP observation made over DTLS survives Resets forged in clear. Starts the
given hub binary (a release build) with plain CoAP on, registers libcoap's observer over
DTLS from a fixed port, sends a Reset for every message id from that address and port to
the plain CoAP port (as anyone on the network can), then checks that the observer still
gets the next value, and, as a control, that it gets it without the forgery too.

    python3 tests/attack/observe.py target/release/hub
"""
import socket, subprocess, sys, threading, time

import requests

from hubproc import dtls_port, free_port, start

binary = sys.argv[1]

def observe_through(forge):
    plain = free_port()
    base, data = start(binary, free_port(), extra=f'plain = true\nplain_listen = "127.0.0.1:{plain}"\n')
    dport = dtls_port(data)
    s = requests.Session()
    code = open(f"{data}/setup-code").read().strip()
    s.post(base + "/api/setup", json={"code": code, "username": "owner", "password": "a long owner password"}).raise_for_status()
    d = s.post(base + "/api/devices", json={"name": "display"}).json()
    uri = f"coaps://127.0.0.1:{dport}/d/{d['id']}/power"
    post = lambda v: subprocess.run(["coap-client-openssl", "-m", "post", "-u", d["id"], "-k", d["secret"], "-e", v, uri],
                                    capture_output=True, timeout=30)
    post("-100.5")
    port = free_port()
    observer = subprocess.Popen(["stdbuf", "-o0", "coap-client-openssl", "-p", str(port), "-s", "10", "-m", "get",
                                 "-u", d["id"], "-k", d["secret"], uri], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = []
    threading.Thread(target=lambda: seen.append(observer.stdout.read()), daemon=True).start()
    time.sleep(1.5)
    if forge:
        # The same address and port as the observer (libcoap binds it with SO_REUSEADDR).
        # Closed at once after: while it is bound, the kernel hands it the observer's datagrams.
        f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        f.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        f.bind(("127.0.0.1", port))
        for mid in range(65536):
            f.sendto(bytes([0x70, 0x00, mid >> 8, mid & 0xFF]), ("127.0.0.1", plain))
        f.close()
        time.sleep(1)
    post("-200.5")
    time.sleep(2)
    observer.kill(); observer.wait(); time.sleep(0.3)
    return b"".join(seen).decode(errors="replace")

results = []
def check(what, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok ' if ok else 'BAD'} {what}{': ' + str(detail) if detail and not ok else ''}")

control = observe_through(False)
check("without forgery, the DTLS observer sees the next value", "-200.5" in control, control[:200])
forged = observe_through(True)
check("after 65,536 Resets forged in clear from its address and port, it still does", "-200.5" in forged, forged[:200])
print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
