"""Black-box tries at the ownership promise, as someone on the home network would: starts the
given hub binary (a release build) on loopback with a fresh data directory and real time,
then tries what was found to break it. Uses mosquitto_sub/mosquitto_pub.

    python3 tests/attack/promise.py target/release/hub
"""
import json, sqlite3, subprocess, sys, threading, time, requests

from hubproc import free_port, start

binary = sys.argv[1]
mqtt = free_port()
closed = free_port()  # cloud destinations nobody answers: their messages wait in the outbox
base, data = start(binary, mqtt, f"""[cloud]
max_queued = 3
retry_max_s = 60
[[cloud.destinations]]
name = "mine"
kind = "webhook"
url = "http://127.0.0.1:{closed}/a"
[[cloud.destinations]]
name = "shared"
kind = "webhook"
url = "http://127.0.0.1:{closed}/b"
tenants = true
""")

results = []
def check(what, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok ' if ok else 'BAD'} {what}{': ' + str(detail) if detail and not ok else ''}")

def must(r, *codes):
    assert r.status_code in codes, f"{r.request.method} {r.url}: {r.status_code} {r.text}"
    return r.json() if r.text else None

code = open(f"{data}/setup-code").read().strip()
owner = requests.Session()
must(owner.post(base + "/api/setup", json={"code": code, "username": "owner", "password": "a long owner password"}), 201)
meter = must(owner.post(base + "/api/devices", json={"name": "Meter"}), 201)
now = int(time.time() * 1000)
HOUR = 3_600_000

# 1. An hourly grant, probed with narrow ranges: the owner's readings of three hours ago.
hour = now - now % HOUR - 3 * HOUR
def publish(device, value, ts=None):
    body = json.dumps({"value": value, "ts": ts}) if ts else str(value)
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt), "-u", device["id"], "-P", device["secret"],
                    "-q", "1", "-t", f"hearth/{device['id']}/energy", "-m", body], check=True, timeout=10)
stamps = [hour + 60_000 * (i + 1) for i in range(5)] + [hour + HOUR + 90_000]
for i, ts in enumerate(stamps):
    publish(meter, 10.5 + i, ts)
rec = must(owner.post(base + "/api/recipients", json={"name": "Power Co", "kind": "utility"}), 201)
auth = (rec["client_id"], rec["client_secret"])
req = must(requests.post(base + "/api/share/requests", auth=auth, json={"categories": ["energy"], "granularity": "hour",
    "window_from": hour - HOUR, "duration_days": 30, "purpose": "tariffs", "offer": {"text": "advice"}}), 201)
grant = must(owner.post(base + f"/api/consent/requests/{req['id']}/grant", json={}), 201)
def shared(frm, to):
    return must(requests.get(base + f"/api/share/grants/{grant['id']}/data?from={frm}&to={to}", auth=auth), 200)
leaks = [ts for ts in stamps if shared(ts, ts + 1)["series"] or shared(ts - 500, ts + 500)["series"]]
check("1. narrow ranges around each reading give nothing", not leaks, leaks)
whole = shared(hour - HOUR, hour + 2 * HOUR)
buckets = [b for s in whole["series"] for b in s.get("aggregates", [])]
check("1. a whole hour of five readings is served as one summary",
      [(b["start"], b["count"]) for b in buckets] == [(hour, 5)], buckets)
check("1. the hour with one reading is not served", "15.5" not in json.dumps(whole), whole)

# 4. Three tenancies in a row; 3. a former tenant no longer acts.
tenants = []
for n in range(3):
    inv = must(owner.post(base + "/api/tenancies", json={}), 201)
    t = requests.Session()
    must(t.post(base + "/api/invites/accept", json={"code": inv["code"], "username": f"tenant{n}",
                                                   "password": "a long tenant password"}), 201)
    time.sleep(1.1)
    tenants.append((t, inv["tenancy"]))
    if n < 2:
        r = owner.post(base + f"/api/tenancies/{inv['tenancy']}/end", json={})
        check(f"4. tenancy {n + 1} ends", r.status_code == 200, r.text)
        time.sleep(1.1)
check("4. the third tenancy was created after two ended", len(tenants) == 3)
rule = {"name": "r", "insist": True, "triggers": [{"type": "interval", "every_s": 5}],
        "actions": [{"type": "mqtt", "device": meter["id"], "metric": "power", "value": "on"}]}
r = tenants[0][0].post(base + "/api/rules", json=rule)
check("3. a former tenant cannot make a rule", r.status_code == 403, r.status_code)
r = tenants[0][0].post(base + "/api/devices", json={"name": "x"})
check("3. nor add a device", r.status_code == 403, r.status_code)

# 2. The owner, with the meter's credentials, listens while the current tenant's meter reports.
sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt), "-u", meter["id"], "-P", meter["secret"],
                        "-i", "owner-spy", "-t", f"hearth/{meter['id']}/#", "-v", "-W", "3"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
time.sleep(0.5)
publish(meter, 77.25)
heard = sub.communicate(timeout=10)[0]
check("2. subscribing with the device's credentials hears no tenant reading", "77.25" not in heard, heard)
theirs = must(tenants[2][0].get(base + f"/api/devices/{meter['id']}/metrics/energy/readings?from=0&to=99999999999999"), 200)
check("2. (the tenant has the reading)", any(p["value"] == 77.25 for p in theirs.get("readings", [])), theirs)
publish(meter, 77.5)  # a second tenant reading: their meter now has a rhythm (10. below)

# 5. The owner reclassifies the household meter during the tenancy: it waits for the tenant.
r = owner.put(base + f"/api/devices/{meter['id']}/class", json={"class": "building"})
check("5. reclassifying during a tenancy waits for the tenant", r.status_code == 202, r.status_code)
cls = must(owner.get(base + f"/api/devices/{meter['id']}"), 200)["class"]
check("5. the class is unchanged until they agree", cls == "household", cls)

# 7. The current tenant's rule tries CoAP to an address of its own choosing, then to a device
# the owner gave no CoAP address, then sets one itself.
tenant = tenants[2][0]
probe = {"name": "Probe", "triggers": [{"type": "interval", "every_s": 5}],
         "actions": [{"type": "coap", "uri": "coap://127.0.0.1:5683/x", "method": "post", "payload": "x"}]}
r = tenant.post(base + "/api/rules", json=probe)
check("7. a tenant's rule cannot name a CoAP address", r.status_code == 422, r.status_code)
probe["actions"] = [{"type": "coap", "device": meter["id"], "path": "x", "payload": "x"}]
r = tenant.post(base + "/api/rules", json=probe)
check("7. nor a device the owner gave no CoAP address", r.status_code == 422 and "no CoAP address" in r.text, r.text)
r = tenant.put(base + f"/api/devices/{meter['id']}/coap-address", json={"address": "127.0.0.1:5683"})
check("7. nor give a device an address itself", r.status_code == 403, r.status_code)

# 6. A guest's open live stream ends when the guest is removed.
inv = must(owner.post(base + "/api/guests", json={"devices": [meter["id"]]}), 201)
guest = requests.Session()
must(guest.post(base + "/api/invites/accept", json={"code": inv["code"], "username": "gus",
                                                   "password": "a long guest password"}), 201)
stream = guest.get(base + "/api/live", stream=True, timeout=10)
ended = threading.Event()
def drain():
    try:
        for _ in stream.iter_content(64):
            pass
    except Exception:
        pass
    ended.set()
threading.Thread(target=drain, daemon=True).start()
time.sleep(0.5)
gid = must(owner.get(base + "/api/guests"), 200)[0]["id"]
must(owner.delete(base + f"/api/guests/{gid}"), 204)
check("6. the removed guest's live stream ends", ended.wait(5))

# 7. The tenant's rule floods a cloud destination: only the one the owner opened to tenants,
# and it drops only the tenant's own oldest messages.
def queued():
    db = sqlite3.connect(f"file:{data}/hearth.db?mode=ro", uri=True)
    rows = dict(db.execute("SELECT subject, COUNT(*) FROM outbox GROUP BY subject").fetchall())
    db.close()
    return rows
every_s = lambda name, to: {"name": name, "triggers": [{"type": "interval", "every_s": 1}],
                            "actions": [{"type": "cloud", "destination": to, "payload": {"from": name}}]}
mine = must(owner.post(base + "/api/rules", json=every_s("owner's", "shared")), 201)
time.sleep(2.5)
must(owner.delete(base + f"/api/rules/{mine['id']}"), 204)
owners = queued().get("owner", 0)
r = tenant.post(base + "/api/rules", json=every_s("tenant's", "mine"))
check("7. a tenant's rule cannot use the owner's own destination", r.status_code == 422, r.status_code)
must(tenant.post(base + "/api/rules", json=every_s("tenant's", "shared")), 201)
time.sleep(6)
q = queued()
tenancy_key = f"tenancy:{tenants[2][1]}"
check("7. the tenant's flood keeps to its share", q.get(tenancy_key) == 3 and q.get("owner") == owners and owners > 0, q)

# 9. The tenant's bridge is connected when the tenancy ends (below).
bridge = must(tenant.post(base + "/api/devices", json={"name": "Tenant's Zigbee"}), 201)
must(tenant.put(base + f"/api/devices/{bridge['id']}/bridge", json={"namespaces": ["tz/#"]}), 200)
def as_bridge(tool, *args):
    return [tool, "-h", "127.0.0.1", "-p", str(mqtt), "-u", bridge["id"], "-P", bridge["secret"], *args]
listening = subprocess.Popen(as_bridge("mosquitto_sub", "-t", "tz/#", "-k", "60"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
time.sleep(0.5)
check("9. (the tenant's bridge is connected)", listening.poll() is None)

# 8. The tenancy ends and is shredded: what its rules queued goes with it.
end = must(owner.post(base + f"/api/tenancies/{tenants[2][1]}/end", json={}), 200)
time.sleep(max(0, end["end"] / 1000 - time.time()) + 0.2)
# 9. At the end its bridge's session ends, and it logs in no more (nor adds devices).
try:
    listening.wait(timeout=5)
except subprocess.TimeoutExpired:
    listening.kill()
check("9. the former tenant's bridge's session ended with the tenancy", listening.returncode is not None
      and listening.returncode != -9, listening.returncode)
r = subprocess.run(as_bridge("mosquitto_pub", "-q", "1", "-t", "tz/bridge/devices", "-m", "[]"),
                   capture_output=True, text=True, timeout=10)
check("9. the former tenant's bridge is refused", r.returncode != 0 and "refused" in (r.stderr + r.stdout).lower(),
      (r.returncode, r.stderr))
must(tenant.post(base + f"/api/tenancies/{tenants[2][1]}/shred"), 204)
q = queued()
check("8. shredding deletes the tenancy's queued cloud messages", tenancy_key not in q and q.get("owner") == owners, q)

# 10. How often the tenant's meter reported is their household's life: the owner's first
# reading after the tenancy carries none of it.
publish(meter, 5.0)
listed = must(owner.get(base + "/api/devices"), 200)
energy = [m for d in listed if d["id"] == meter["id"] for m in d["metrics"] if m["metric"] == "energy"]
check("10. the owner's first reading after the tenancy carries none of the tenant's rhythm",
      len(energy) == 1 and energy[0].get("every") is None, energy)

print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
