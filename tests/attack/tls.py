"""Black-box checks of TLS by default, on a release build, as someone on the home network
would try them: OpenSSL's s_client, curl, Debian's mosquitto_pub, and raw sockets. Actors
have their own loopback addresses (attacker 127.0.0.2 and .3, owner .4), and plain MQTT from
loopback is not exempted, so the hub treats them all as other machines.

    python3 tests/attack/tls.py target/release/hub
"""
import http.client, json, os, socket, ssl, struct, subprocess, sys, threading, time

from hubproc import free_port, idle_flood, start

binary = sys.argv[1]
mqtt_port, mqtts_port = free_port(), free_port()
base, data = start(binary, mqtt_port, tls=True, mqtts_port=mqtts_port, plain_from_loopback=False)
https_port = int(base.rsplit(":", 1)[1])
ca = os.path.join(data, "tls", "ca.pem")
log = os.path.join(os.path.dirname(data), "out")
conf = open(os.path.join(os.path.dirname(data), "hub.toml")).read()
plain_port = int(conf.split('listen = "127.0.0.1:')[1].split('"')[0])

results = []
def check(what, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok ' if ok else 'BAD'} {what}{': ' + str(detail) if detail and not ok else ''}")

def run(*args):
    p = subprocess.run(args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout + p.stderr

context = ssl.create_default_context(cafile=ca)
def call(method, path, body=None, source="127.0.0.4", cookie=None, timeout=30):
    conn = http.client.HTTPSConnection("localhost", https_port, timeout=timeout, source_address=(source, 0), context=context)
    headers = {"content-type": "application/json"}
    if cookie: headers["cookie"] = cookie
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace"), r.getheader("set-cookie")
    except OSError as e:
        return 0, str(e), None
    finally:
        conn.close()

# 1. The chain verifies against the hub's CA, on HTTPS and MQTT, by name and by address.
for port, what in [(https_port, "HTTPS"), (mqtts_port, "MQTTS")]:
    rc, out = run("openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", ca, "-verify_return_error",
                  "-verify_hostname", "localhost", "-servername", "localhost", "-brief")
    check(f"1. openssl s_client -verify_return_error -CAfile verifies {what}", rc == 0 and "Verification: OK" in out, out[-300:])
rc, out = run("curl", "-sS", "--fail", "--cacert", ca, f"https://localhost:{https_port}/api/health")
check("1. curl --cacert reaches the API", rc == 0 and '"ok"' in out, out)
rc, out = run("curl", "-sS", "--fail", f"https://localhost:{https_port}/api/health")
check("1. curl without the hub's CA refuses it", rc != 0, out)

# 2. The plain port gives nothing away and takes nothing in.
def plain(method, path, body=None, host=None):
    conn = http.client.HTTPConnection("127.0.0.1", plain_port, timeout=10, source_address=("127.0.0.2", 0))
    headers = {"content-type": "application/json"}
    if host: headers["host"] = host
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    r = conn.getresponse()
    out = (r.status, r.read(), r.getheader("location"), r.getheader("set-cookie"))
    conn.close()
    return out
status, _, location, cookie = plain("POST", "/api/login", {"username": "owner", "password": "x"})
check("2. a login sent in clear is redirected, not judged", status == 308 and cookie is None and location.startswith("https://"), (status, location))
status, _, _, _ = plain("GET", "/api/devices")
check("2. the API is not served in clear", status == 308, status)
status, body, _, _ = plain("GET", "/hearth-ca.pem")
check("2. the CA certificate is handed out in clear", status == 200 and body.decode() == open(ca).read())
rc, fp = run("openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", ca)
fingerprint = fp.strip().split("=", 1)[1]
status, body, _, _ = plain("GET", "/trust")
check("2. /trust shows the CA's fingerprint", status == 200 and fingerprint in body.decode(), fingerprint)
raw = socket.create_connection(("127.0.0.1", plain_port), timeout=5, source_address=("127.0.0.2", 0))
raw.sendall(b"GET / HTTP/1.1\r\nHost: evil.example/<script>\r\nConnection: close\r\n\r\n")
answer = raw.recv(4096).decode(errors="replace"); raw.close()
check("2. a Host header that is not a name is not echoed into a redirect", answer.startswith("HTTP/1.1 400") and "<script>" not in answer, answer[:120])
printed = open(log).read()
check("2. the fingerprint is printed beside the setup code", fingerprint in printed and "setup code" in printed)

# 3. Setup over HTTPS: the session cookie is Secure.
code = open(f"{data}/setup-code").read().strip()
status, _, set_cookie = call("POST", "/api/setup", {"code": code, "username": "owner", "password": "a long owner password"})
check("3. the session cookie is Secure", status == 201 and "Secure" in (set_cookie or ""), set_cookie)
cookie = set_cookie.split(";")[0]
status, text, _ = call("POST", "/api/devices", {"name": "Thermostat"}, cookie=cookie)
device = json.loads(text)
dev, key = device["id"], device["secret"]

# 4. Devices: TLS by default, plain only when marked.
def pub(port, value, cafile=None):
    args = ["mosquitto_pub", "-h", "localhost", "-p", str(port), "-u", dev, "-P", key, "-q", "1",
            "-t", f"hearth/{dev}/temperature", "-m", str(value)]
    if cafile: args += ["--cafile", cafile]
    return run(*args)
rc, out = pub(mqtts_port, 20.5, ca)
check("4. mosquitto_pub --cafile publishes over TLS", rc == 0, out)
rc, out = pub(mqtts_port, 99, "/etc/ssl/certs/ca-certificates.crt")
check("4. a client trusting other CAs does not connect", rc != 0, out)
rc, out = pub(mqtt_port, 1)
check("4. plain MQTT is refused for a device not marked", rc != 0, out)
status, _, _ = call("PUT", f"/api/devices/{dev}/plaintext", {"plaintext": True}, cookie=cookie)
rc, out = pub(mqtt_port, 21)
check("4. plain MQTT works once the owner marks the device", status == 200 and rc == 0, (status, out))
call("PUT", f"/api/devices/{dev}/plaintext", {"plaintext": False}, cookie=cookie)
rc, out = pub(mqtt_port, 2)
check("4. and is refused again once unmarked", rc != 0, out)
status, text, _ = call("GET", f"/api/devices/{dev}/metrics/temperature/readings", cookie=cookie)
values = [p["value"] for p in json.loads(text).get("readings") or []] if status == 200 else []
check("4. only the accepted readings are stored", sorted(values) == [20.5, 21.0], (status, text[:200]))

# 5. Garbage at the TLS ports: the hub keeps serving.
for port in (https_port, mqtts_port):
    for n in range(50):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=("127.0.0.2", 0))
            s.sendall(os.urandom(1000)); s.close()
        except OSError:
            pass
rc, out = pub(mqtts_port, 22, ca)
check("5. after 100 garbage handshakes a device still publishes over TLS", rc == 0, out)

# 6. The bar: 600 idle sockets at the MQTT over TLS port and 100 concurrent wrong logins
# over HTTPS; a device connects over TLS and publishes, and the owner logs in, within 2 s.
log_before = os.path.getsize(log)
stop = threading.Event()
flood, _ = idle_flood(mqtts_port, stop)
guesses = [threading.Thread(target=call, args=("POST", "/api/login", {"username": "owner", "password": f"guess {n}"}, "127.0.0.3")) for n in range(100)]
for g in guesses: g.start()
time.sleep(1.5)

def utf8(s):
    b = s.encode(); return struct.pack(">H", len(b)) + b
started = time.time()
raw = socket.create_connection(("127.0.0.1", mqtts_port), timeout=5)
tls = context.wrap_socket(raw, server_hostname="localhost")
var = utf8("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 30)
payload = utf8("door") + utf8(dev) + utf8(key)
tls.sendall(bytes([0x10, len(var) + len(payload)]) + var + payload)
connack = tls.recv(4)
topic = utf8(f"hearth/{dev}/temperature")
body = topic + struct.pack(">H", 1) + b"23"
tls.sendall(bytes([0x32, len(body)]) + body)
puback = tls.recv(4)
device_took = time.time() - started
tls.close()
started = time.time()
status, _, _ = call("POST", "/api/login", {"username": "owner", "password": "a long owner password"}, "127.0.0.4")
owner_took = time.time() - started
stop.set(); flood.join()
for g in guesses: g.join()
check(f"6. under the flood a device connects over TLS and publishes within 2 s ({device_took:.3f} s)",
      connack[3:4] == b"\x00" and puback[:1] == b"\x40" and device_took < 2, (connack, puback))
check(f"6. and the owner logs in within 2 s ({owner_took:.3f} s)", status == 200 and owner_took < 2, status)
grown = os.path.getsize(log) - log_before
check(f"6. the flood added little to the log ({grown} bytes)", grown < 100_000, grown)

print(f"{sum(results)}/{len(results)} checks passed")
sys.exit(0 if all(results) else 1)
