"""Black-box checks of the API's route gate, as a caller on the home network would try it:
starts the given hub binary (a release build) on loopback with a fresh data directory, then
tries each kind of caller (anonymous, forged or bogus credentials, owner, bearer token,
recipient, guest) on routes it may and may not use.

    python3 tests/attack/routes.py target/release/hub
"""
import base64, sys, requests

from hubproc import start

binary = sys.argv[1]
base, data = start(binary)
code = open(f"{data}/setup-code").read().strip()
owner = requests.Session()
r = owner.post(base + "/api/setup", json={"code": code, "username": "owner", "password": "a long owner password"})
assert r.status_code in (200, 201), r.text
results = []
def check(what, got, want):
    ok = got == want
    results.append(ok)
    print(f"{'ok ' if ok else 'BAD'} {what}: {got} (want {want})")

anon = requests.Session()
check("anonymous GET /api/devices", anon.get(base + "/api/devices").status_code, 401)
check("anonymous GET /api/outbox", anon.get(base + "/api/outbox").status_code, 401)
check("anonymous POST /api/rules", anon.post(base + "/api/rules", json={}).status_code, 401)
check("owner GET /api/outbox", owner.get(base + "/api/outbox").status_code, 200)
check("owner GET /api/share/me (recipients only)", owner.get(base + "/api/share/me").status_code, 401)
check("forged cookie", requests.get(base + "/api/me", cookies={"hearth_session": "A" * 43}).status_code, 401)
check("bogus bearer", requests.get(base + "/api/me", headers={"Authorization": "Bearer nope"}).status_code, 401)
check("malformed Authorization", requests.get(base + "/api/me", headers={"Authorization": "Basic !!!"}).status_code, 401)
tok = owner.post(base + "/api/tokens", json={"name": "script"}).json()["token"]
check("real bearer GET /api/me", requests.get(base + "/api/me", headers={"Authorization": f"Bearer {tok}"}).status_code, 200)
rec = owner.post(base + "/api/recipients", json={"name": "Power Co", "kind": "utility"}).json()
basic = base64.b64encode(f"{rec['client_id']}:{rec['client_secret']}".encode()).decode()
rh = {"Authorization": f"Basic {basic}"}
check("recipient GET /api/share/me", requests.get(base + "/api/share/me", headers=rh).status_code, 200)
check("recipient GET /api/devices", requests.get(base + "/api/devices", headers=rh).status_code, 403)
check("recipient GET /api/outbox", requests.get(base + "/api/outbox", headers=rh).status_code, 403)
wrong = base64.b64encode(f"{rec['client_id']}:wrong".encode()).decode()
check("recipient wrong secret", requests.get(base + "/api/share/me", headers={"Authorization": f"Basic {wrong}"}).status_code, 401)
dev = owner.post(base + "/api/devices", json={"name": "Meter"}).json()["id"]
inv = owner.post(base + "/api/guests", json={"devices": [dev]}).json()["code"]
guest = requests.Session()
r = guest.post(base + "/api/invites/accept", json={"code": inv, "username": "gus", "password": "a long guest password"})
check("guest accepts invite", r.status_code, 201)
check("guest GET /api/devices", guest.get(base + "/api/devices").status_code, 200)
check("guest GET /api/outbox", guest.get(base + "/api/outbox").status_code, 403)
check("guest POST /api/devices", guest.post(base + "/api/devices", json={"name": "x"}).status_code, 403)
check("guest PUT class", guest.put(base + f"/api/devices/{dev}/class", json={"class": "building"}).status_code, 403)
check("guest POST /api/tenancies", guest.post(base + "/api/tenancies", json={}).status_code, 403)
check("owner PATCH /api/devices (no such method)", owner.patch(base + "/api/devices").status_code in (404, 405), True)
check("owner encoded traversal /api/devices/..%2Foutbox", owner.get(base + "/api/devices/..%2Foutbox").status_code in (404,), True)
r = guest.get(base + "//api/outbox")
print("   //api/outbox ->", r.status_code, r.headers.get("content-type"), r.text[:80].replace("\n", " "))
check("guest via double slash //api/outbox gets no outbox data", "destinations" in r.text, False)
print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
