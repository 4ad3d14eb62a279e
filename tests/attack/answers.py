"""Black-box check that the API's answers carry nothing stored that they should not: starts
the given hub binary (a release build) on loopback with a fresh data directory, fills it
through the API (a device, a recipient, a tenancy with its tenant, a data request granted
and read, a guest, a rule) and then reads every list a caller can read, as each caller.
No answer may hold a stored secret or digest (a password or secret hash, a sealed or
wrapped key, an invite code's digest), and secrets shown once are shown only once.

    python3 tests/attack/answers.py target/release/hub
"""
import base64, sys, time, requests

from hubproc import start

binary = sys.argv[1]
base, data = start(binary)

results = []
def check(what, ok):
    results.append(ok)
    print(f"{'ok ' if ok else 'BAD'} {what}")

def ok(r):
    assert r.status_code in (200, 201, 204), f"{r.request.method} {r.url}: {r.status_code} {r.text}"
    return r.json() if r.text else None

code = open(f"{data}/setup-code").read().strip()
owner = requests.Session()
ok(owner.post(base + "/api/setup", json={"code": code, "username": "owner", "password": "a long owner password"}))
device = ok(owner.post(base + "/api/devices", json={"name": "Meter"}))
invite = ok(owner.post(base + "/api/tenancies", json={}))
tenant = requests.Session()
ok(tenant.post(base + "/api/invites/accept", json={"code": invite["code"], "username": "tess", "password": "a long tenant password"}))
time.sleep(1.2)  # the tenancy starts a moment after it is made
rec = ok(tenant.post(base + "/api/recipients", json={"name": "Power Co", "kind": "utility"}))
rh = {"Authorization": "Basic " + base64.b64encode(f"{rec['client_id']}:{rec['client_secret']}".encode()).decode()}
terms = {"categories": ["energy"], "granularity": "hour", "window_from": 0, "duration_days": 30,
         "purpose": "billing", "offer": {"text": "a discount"}}
req = ok(requests.post(base + "/api/share/requests", headers=rh, json=terms))
grant = ok(tenant.post(base + f"/api/consent/requests/{req['id']}/grant", json={}))
ok(requests.get(base + f"/api/share/grants/{grant['id']}/data", headers=rh))
guest_invite = ok(owner.post(base + "/api/guests", json={"devices": [device["id"]]}))
ok(requests.Session().post(base + "/api/invites/accept", json={"code": guest_invite["code"], "username": "gus", "password": "a long guest password"}))
ok(owner.post(base + "/api/rules", json={"name": "r", "insist": True, "triggers": [{"type": "reading", "device": device["id"], "metric": "power"}],
                                        "actions": [{"type": "notify", "message": "x"}]}))

# Everything each caller can list or read.
reads = [(owner, p) for p in ["/api/me", "/api/devices", f"/api/devices/{device['id']}", "/api/tenancies", "/api/guests",
                             "/api/recipients", "/api/rules", "/api/notifications", "/api/outbox", "/api/consent/requests",
                             "/api/consent/grants", "/api/consent/access-log", "/api/consent/ledger", "/api/consent/key"]]
reads += [(tenant, p) for p in ["/api/me", "/api/devices", "/api/tenancies", "/api/recipients", "/api/consent/requests",
                               "/api/consent/grants", f"/api/consent/grants/{grant['id']}/receipts", "/api/consent/access-log",
                               "/api/consent/ledger"]]
reads += [(None, p) for p in ["/api/share/me", "/api/share/requests", "/api/share/grants",
                             f"/api/share/grants/{grant['id']}/receipts"]]
FORBIDDEN_KEYS = {"secret_hash", "password_hash", "code_hash", "token_hash", "wrapped", "sealed", "secret_sealed",
                  "secret", "client_secret", "password", "token", "seed", "private_key"}
once = [device["secret"], rec["client_secret"], invite["code"], guest_invite["code"]]

def keys(v, path=""):
    if isinstance(v, dict):
        for k, x in v.items():
            yield path + "." + k, k
            yield from keys(x, path + "." + k)
    elif isinstance(v, list):
        for x in v:
            yield from keys(x, path + "[]")

for who, path in reads:
    r = who.get(base + path) if who else requests.get(base + path, headers=rh)
    if r.status_code != 200:
        check(f"GET {path}: {r.status_code}", False)
        continue
    bad = [p for p, k in keys(r.json()) if k in FORBIDDEN_KEYS]
    check(f"GET {path} ({'recipient' if who is None else 'owner' if who is owner else 'tenant'}) holds no stored secret{': ' + ', '.join(bad) if bad else ''}", not bad)
    shown = [s for s in once if s in r.text]
    check(f"GET {path} repeats no secret shown once", not shown)

print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
