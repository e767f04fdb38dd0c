"""/admin (README "Admin page"): behind its own secret as the HTTP Basic
password, apart from the API key in both directions; its files and its
read-only views of the server API; 404 when no --admin-secret is set; a
node refuses to start with the admin secret equal to the API key."""

import base64
import json
import subprocess

import chorus_harness as h

SECRET = "adm-s3cret"
KEY = "api-k3y"

srv = h.Server("--admin-secret", SECRET, "--api-key", KEY, node_id="node-admin")
off = h.Server("--api-key", KEY, node_id="node-admin-off", name="node-admin-off")


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@h.test("Without credentials, or with a wrong password or the API key, /admin answers 401 with a Basic challenge")
async def _():
    for headers in ({}, basic("admin", "wrong"), basic("admin", KEY), {"X-API-Key": KEY},
                    {"Authorization": f"apikey {KEY}"}, {"Authorization": "Basic !!notbase64"}):
        for path in ("/admin", "/admin/", "/admin/admin.js", "/admin/api/info", "/admin/api/channels"):
            status, hdrs, body = srv.http("GET", path, headers=headers)
            assert status == 401, f"{path} with {headers}: {status} {body[:80]!r}"
            assert hdrs.get("www-authenticate", "").startswith('Basic realm="chorus admin"'), hdrs
            assert json.loads(body)["code"] == "unauthorized"


@h.test("With the secret (any user name) the page, its script and style are served")
async def _():
    for path, ctype, marker in (("/admin", "text/html", b"Chorus"), ("/admin/", "text/html", b"admin.js"),
                                ("/admin/admin.js", "text/javascript", b"/admin/api/info"),
                                ("/admin/admin.css", "text/css", b"")):
        status, hdrs, body = srv.http("GET", path, headers=basic("anyone", SECRET))
        assert status == 200, f"{path}: {status}"
        assert hdrs["content-type"].startswith(ctype), hdrs["content-type"]
        assert marker in body, path
    # a dot segment leaves /admin before routing: it is the public demo, never an admin file
    status, _h, body = srv.http("GET", "/admin/../index.html", headers=basic("a", SECRET))
    assert b"/admin/admin.js" not in body, status
    status, _h, _b = srv.http("GET", "/admin/secret.txt", headers=basic("a", SECRET))
    assert status == 404, status


@h.test("The secret opens the read-only views of /api/info and /api/channels, nothing that writes")
async def _():
    status, _h, body = srv.http("GET", "/admin/api/info", headers=basic("a", SECRET))
    assert status == 200, body
    info = json.loads(body)
    assert [n["node"] for n in info["nodes"]] == ["node-admin"] and info["missing"] == [], info
    status, _h, body = srv.http("GET", "/admin/api/channels?limit=5", headers=basic("a", SECRET))
    assert status == 200 and "channels" in json.loads(body), body
    # the admin secret is no API key
    for method, path, body in (("GET", "/api/info", None), ("GET", "/api/channels", None),
                               ("POST", "/api/publish", {"ch": "x", "data": 1})):
        status, _h, raw = srv.http(method, path, body, headers={"X-API-Key": SECRET, **basic("a", SECRET)})
        assert status == 401, f"{method} {path} with the admin secret: {status} {raw[:80]!r}"
    status, _h, _b = srv.http("POST", "/admin/api/info", headers=basic("a", SECRET))
    assert status == 405, status
    # and the API key still opens /api/info as before
    status, _h, _b = srv.http("GET", "/api/info", headers={"X-API-Key": KEY})
    assert status == 200, status


@h.test("On a kept-alive connection the admin secret of one request opens nothing for the next")
async def _():
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=h.t(10))
    try:
        for path, headers, want in (("/admin/api/info", basic("a", SECRET), 200), ("/api/info", {}, 401),
                                    ("/admin/api/channels", basic("a", SECRET), 200), ("/admin/api/info", {}, 401),
                                    ("/api/channels", {}, 401)):
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            r.read()
            assert r.status == want, f"{path}: {r.status}, expected {want}"
            if want == 401 and path.startswith("/admin"):
                assert r.getheader("www-authenticate"), path
            elif want != 401:
                assert r.getheader("www-authenticate") is None, path
    finally:
        conn.close()


@h.test("Without --admin-secret every /admin path is 404, whatever credentials come")
async def _():
    for path in ("/admin", "/admin/", "/admin/api/info"):
        for headers in ({}, basic("a", SECRET), {"X-API-Key": KEY}):
            status, _h, body = off.http("GET", path, headers=headers)
            assert status == 404, f"{path}: {status}"
            assert b"--admin-secret" in body, body


@h.test("A node refuses to start when the admin secret is the API key")
async def _():
    p = subprocess.run([h.chorusd_path(), "--port", str(h.free_port()), "--admin-secret", "same",
                        "--api-key", "same"], env=h.clean_env(), capture_output=True, text=True,
                       timeout=h.t(10))
    assert p.returncode == 2 and "--admin-secret must differ from --api-key" in p.stderr, (p.returncode, p.stderr)


if __name__ == "__main__":
    h.main([srv, off])
