"""Black-box tries at what people choose for their devices and at the rule editor's
refusals, as someone on the home network holding a tenant's, a guest's or no credentials
would: starts the given hub binary (a release build) on loopback with a fresh data
directory, then

  - renames, moves and hides the owner's devices as a tenant, a guest and nobody;
  - renames a tenant's own device as the owner (who must not even see it);
  - sends names that hide characters (bidi overrides, zero-width), overlong names, a
    label map of 5,000 entries, a body that is not JSON, and checks the hub still answers;
  - saves rules on a value no device has (refused unless insisted on) and a command to a
    Zigbee2MQTT bridge itself (refused even insisted on);
  - sends a command to a device nothing of which is connected: the hub says unheard;
  - asks for the UI's files with odd Accept-Encoding headers and paths out of the UI.

Bounded in time (seconds); mosquitto_pub for the devices' messages.

    python3 tests/attack/glance.py target/release/hub
"""
import json, os, subprocess, sys, time, requests

from hubproc import free_port, start

binary = sys.argv[1]
mqtt = free_port()
base, data = start(binary, mqtt_port=mqtt)
corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../hub/tests/data/ecosystems")
results = []
def check(what, got, want):
    ok = got == want
    results.append(ok)
    print(f"{'ok ' if ok else 'BAD'} {what}: {got} (want {want})", flush=True)

def publish(device, topic, payload):
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt), "-u", device["id"], "-P", device["secret"],
                    "-q", "1", "-t", topic, "-m", payload], check=True, timeout=10)

code = open(f"{data}/setup-code").read().strip()
owner = requests.Session()
assert owner.post(base + "/api/setup", json={"code": code, "username": "owner", "password": "a long owner password"}).ok
meter = owner.post(base + "/api/devices", json={"name": "Meter"}).json()
patch = lambda who, dev, body: who.patch(base + f"/api/devices/{dev}", json=body, timeout=10)

inv = owner.post(base + "/api/tenancies", json={}).json()
tenant = requests.Session()
assert tenant.post(base + "/api/invites/accept",
                   json={"code": inv["code"], "username": "tessa", "password": "a long tenant password"}).ok
# A tenancy starts a moment after it is made: until then the tenant adds nothing.
deadline = time.monotonic() + 5
while (r := tenant.post(base + "/api/devices", json={"name": "Lamp"})).status_code != 201 and time.monotonic() < deadline:
    time.sleep(0.1)
lamp = r.json()
guest_inv = owner.post(base + "/api/guests", json={"devices": [meter["id"]]}).json()
guest = requests.Session()
assert guest.post(base + "/api/invites/accept",
                  json={"code": guest_inv["code"], "username": "gus", "password": "a long guest password"}).ok

# Who may choose: the device's manager alone.
check("anonymous renames the meter", requests.patch(base + f"/api/devices/{meter['id']}", json={"name": "x"}).status_code, 401)
check("guest renames the meter", patch(guest, meter["id"], {"name": "Gus's"}).status_code, 403)
check("tenant moves the owner's meter", patch(tenant, meter["id"], {"room": "Tessa's bedroom"}).status_code, 403)
check("tenant hides the owner's meter", patch(tenant, meter["id"], {"hidden": True}).status_code, 403)
check("owner renames the tenant's lamp", patch(owner, lamp["id"], {"name": "Spy"}).status_code, 404)
check("tenant renames their lamp", patch(tenant, lamp["id"], {"name": "Reading lamp"}).status_code, 200)
check("owner places the meter", patch(owner, meter["id"], {"room": "Hall", "favourite": True}).status_code, 200)
# Recording: a tenant may not stop the home's devices from being recorded, nor the owner
# the tenant's own; a guest nothing.
check("tenant stops recording the owner's meter", patch(tenant, meter["id"], {"unrecorded": True}).status_code, 403)
check("guest stops recording the meter", patch(guest, meter["id"], {"unrecorded_values": ["power"]}).status_code, 403)
check("owner stops recording the tenant's lamp", patch(owner, lamp["id"], {"unrecorded": True}).status_code, 404)
check("a value the meter does not have", patch(owner, meter["id"], {"unrecorded_values": ["../power"]}).status_code, 422)
check("not a list", patch(owner, meter["id"], {"unrecorded_values": "power"}).status_code, 422)
seen = tenant.get(base + "/api/storage").json()
check("a tenant sees no hub-wide write rate or database size",
      [k for k in ("written_per_day", "database_bytes", "written_over_ms") if k in seen], [])
# (The write rate comes once the hub has run a second; the database size at once.)
check("the owner sees the database's size", "database_bytes" in owner.get(base + "/api/storage").json(), True)
check("the meter is still recorded",
      {d["id"]: d for d in owner.get(base + "/api/devices").json()}[meter["id"]].get("unrecorded"), False)
seen = {d["id"]: d for d in tenant.get(base + "/api/devices").json()}
check("the tenant sees the owner's room, unchanged", seen[meter["id"]].get("room"), "Hall")

# What is not a name.
for name in ["\u202eretem", "Me\u200bter", "a\u2028b", "x" * 65, "\u0007"]:
    check(f"name {name[:8]!r}", patch(owner, meter["id"], {"name": name}).status_code, 422)
r = patch(owner, meter["id"], {"labels": {f"m{n}": "x" * 64 for n in range(5000)}})
check("5,000 labels (past the body limit)", r.status_code in (400, 413), True)
r = patch(owner, meter["id"], {"labels": {f"m{n}": "x" * 64 for n in range(300)}})
check("300 labels of values it does not have", r.status_code, 422)
r = owner.patch(base + f"/api/devices/{meter['id']}", data="name=x", headers={"content-type": "text/plain"})
check("a body that is not JSON", r.status_code in (400, 415, 422), True)
check("the hub still answers", owner.get(base + "/api/health").status_code, 200)
check("the meter kept its name", {d["id"]: d for d in owner.get(base + "/api/devices").json()}[meter["id"]]["name"], "Meter")

# Rules: a value no device has, and a bridge as a command's target.
z2m = owner.post(base + "/api/devices", json={"name": "Zigbee2MQTT"}).json()
assert owner.put(base + f"/api/devices/{z2m['id']}/bridge", json={"namespaces": ["zigbee2mqtt/#"]}).ok
publish(z2m, "zigbee2mqtt/bridge/devices", open(os.path.join(corpus, "z2m-bridge-devices.json")).read())
deadline = time.monotonic() + 10
plug = None
while time.monotonic() < deadline and plug is None:
    plug = next((d for d in owner.get(base + "/api/devices").json() if d["name"] == "power_plug"), None)
    time.sleep(0.1)
check("the bridge's plug appeared", plug is not None, True)
def rule(device, metric, insist=False):
    return {"name": "r", "insist": insist, "triggers": [{"type": "interval", "every_s": 60}],
            "actions": [{"type": "mqtt", "device": device, "metric": metric, "value": True}]}
r = owner.post(base + "/api/rules", json=rule(plug["id"], "powr"))
check("a command to a value the plug never announced", r.status_code, 422)
check("the refusal names the nearest value", "did you mean \"power\"" in r.text or "state" in r.text, True)
check("insisted on, it is saved", owner.post(base + "/api/rules", json=rule(plug["id"], "powr", True)).status_code, 201)
check("power on sent to the bridge itself", owner.post(base + "/api/rules", json=rule(z2m["id"], "state")).status_code, 422)
check("even insisted on", owner.post(base + "/api/rules", json=rule(z2m["id"], "state", True)).status_code, 422)
check("the plug's own state", owner.post(base + "/api/rules", json=rule(plug["id"], "state")).status_code, 201)

# A command nothing hears.
r = owner.post(base + f"/api/devices/{meter['id']}/command", json={"metric": "power", "value": True})
check("a command to a device never connected", r.json().get("delivery"), "unheard")
# The UI's files, asked for as a browser or a prober would: the copies compressed at build
# time only where accepted, never cached for good unless named by content, no way out of
# the built UI.
def ui(path, encoding):
    return requests.get(base + path, headers={"Accept-Encoding": encoding}, stream=True, timeout=10)
page = ui("/", "identity")
check("the page is asked for again each time", page.headers.get("cache-control"), "no-cache")
wasm = page.text.split("module_or_path: '")[1].split("'")[0]
got = ui(wasm, "gzip, deflate, br")
check("the wasm comes as brotli where accepted", (got.headers.get("content-encoding"), got.headers.get("vary"),
      got.headers.get("content-type")), ("br", "accept-encoding", "application/wasm"))
check("and is cached for good (its name is its content)", got.headers.get("cache-control"),
      "public, max-age=31536000, immutable")
check("brotli refused with q=0 gives gzip", ui(wasm, "br;q=0, gzip").headers.get("content-encoding"), "gzip")
check("brotli refused with Q=0.0 gives gzip", ui(wasm, "br; Q=0.0, gzip").headers.get("content-encoding"), "gzip")
check("nothing accepted gives the raw file", ui(wasm, "identity").headers.get("content-encoding"), None)
check("a weight that is not a number refuses nothing", ui(wasm, ";;q=,br;q=abc;;").headers.get("content-encoding"), "br")
check("the manifest is not cached for good", ui("/manifest.webmanifest", "br").headers.get("cache-control"), "no-cache")
for probe in ["/../Cargo.toml", "/..%2f..%2fetc%2fpasswd", "/%2e%2e/hub.key", "/index.html/../../hub.key"]:
    r = ui(probe, "identity")
    check(f"{probe} is the app's page, nothing else", (r.status_code, r.headers.get("content-type"), "hub.key" in r.text
          or "[package]" in r.text), (200, "text/html; charset=utf-8", False))

print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
