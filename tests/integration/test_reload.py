"""SIGHUP reloads namespaces' rules, token keys and the TLS certificate
(docs/deploy.md 4, issue 15): after the config file changes a namespace's
publish and subscribe rules and the JWT secret, new operations follow the new
rules while existing subscriptions stay; a token signed with the old secret is
refused and one with the new secret accepted; the secret never appears in the
log; a history size change and a changed list of namespaces are refused with a
log line naming them. With TLS, a new certificate and key under the same file
names are served to new handshakes, and a key that does not match is refused
while the running certificate stays.
"""

import asyncio
import json
import os
import signal
import ssl
import subprocess
import tempfile
import time

import chorus_harness as h
import chorus_tokens as tk

OLD_SECRET = tk.SECRET
NEW_SECRET = "reloaded-secret-of-at-least-32-b"


async def wait_log(node, text, timeout=5):
    deadline = time.monotonic() + h.t(timeout)
    while text not in node.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in the log:\n{node.log_tail()}")
        await asyncio.sleep(0.02)


async def hup(node, config_path, cfg, nth):
    with open(config_path, "w") as f:
        json.dump(cfg, f)
    node.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + h.t(5)
    while node.log().count("event=reload_done") < nth:
        assert time.monotonic() < deadline, f"no reload_done #{nth}:\n{node.log_tail()}"
        await asyncio.sleep(0.02)
    assert node.alive(), "SIGHUP ended the node"


async def refused_upgrade(url):
    try:
        c = await h.Client.connect(url)
    except h.websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await c.close()
    return None


@h.test("SIGHUP applies new namespace rules to new operations (existing subscriptions stay), "
        "switches the JWT secret without logging it, and refuses a history size change and a "
        "changed list of namespaces with a log line")
async def _():
    first = {"jwt_secret": OLD_SECRET,
             "namespaces": {"room": {}, "news": {"publish": "nobody"}, "hist": {"history_size": 10}}}
    node = h.Server(node_id="node-reload", name="node-reload", config=first).start()
    path = os.path.join(node._tmpdir, "chorus.json")
    clients = []
    try:
        anon = await h.Client.connect(node)
        clients.append(anon)
        await anon.error({"op": "pub", "ch": "news:today", "data": 1}, "forbidden")
        await anon.sub("room:lobby")                 # held across the reload
        old_user = await h.Client.connect(node.ws_url + "?token=" + tk.hs256(tk.claims(sub="u1")))
        clients.append(old_user)
        assert old_user.hello.get("user") == "u1", old_user.hello

        second = {"jwt_secret": NEW_SECRET,
                  "namespaces": {"room": {"subscribe": "authenticated", "publish": "authenticated"},
                                 "news": {}, "hist": {"history_size": 20}}}
        await hup(node, path, second, 1)
        log = node.log()
        for line in ('event=reload_changed key=jwt-secret value="<hidden>"',
                     "event=reload_changed key=namespaces.room fields=subscribe,publish",
                     "event=reload_changed key=namespaces.news fields=client_publish,publish",
                     "event=reload_refused key=namespaces.hist.history_size old=10 new=20"):
            assert line in log, f"no {line!r} in the log:\n{node.log_tail(30)}"
        assert NEW_SECRET not in log and OLD_SECRET not in log, "a JWT secret reached the log"

        # Namespace rules: new operations follow them.
        await anon.pub("news:today", {"now": "allowed"})
        await anon.error({"op": "sub", "ch": "room:other"}, "forbidden")
        await anon.error({"op": "pub", "ch": "room:lobby", "data": 1}, "forbidden")
        # Tokens: the old secret's are refused at the upgrade, the new one's accepted.
        assert await refused_upgrade(
            node.ws_url + "?token=" + tk.hs256(tk.claims(sub="u2"))) == 401
        new_user = await h.Client.connect(
            node.ws_url + "?token=" + tk.hs256(tk.claims(sub="u3"), secret=NEW_SECRET))
        clients.append(new_user)
        assert new_user.hello.get("user") == "u3", new_user.hello
        # Existing: the anonymous subscription made under the old rules still
        # delivers, and the connection authenticated with the old secret stays.
        await new_user.pub("room:lobby", {"from": "u3"})
        got = await anon.msgs("room:lobby", 1)
        assert got[0]["data"] == {"from": "u3"}, got
        await old_user.pub("room:lobby", {"from": "u1"})
        assert (await anon.msgs("room:lobby", 1))[0]["data"] == {"from": "u1"}

        # A namespace added: refused as a whole; the running rules stay.
        third = dict(second, namespaces=dict(second["namespaces"], extra={},
                                             news={"publish": "nobody"}))
        await hup(node, path, third, 2)
        assert "event=reload_refused key=namespaces msg=" in node.log(), node.log_tail(20)
        await anon.pub("news:today", {"still": "allowed"})
    finally:
        for c in clients:
            await c.close()
        code = node.terminate()
        assert code == 0, node.log_tail()


def pki(tmp):
    def run(*args):
        subprocess.run(["openssl", *args], check=True, cwd=tmp,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Chorus reload CA")
    with open(os.path.join(tmp, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for name in ("one", "two"):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext")


def served_cn(port, ctx):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=h.t(5)) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            subject = dict(x[0] for x in tls.getpeercert()["subject"])
            return subject["commonName"]


def copy(src, dst):
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read())


@h.test("SIGHUP serves a new TLS certificate and key (same file names) to new handshakes, keeps "
        "open wss:// connections, and refuses a key that does not match the certificate")
async def _():
    tmp = tempfile.mkdtemp(prefix="chorus-reload-tls-")
    pki(tmp)
    cert, key = os.path.join(tmp, "server.pem"), os.path.join(tmp, "server.key")
    copy(os.path.join(tmp, "one.pem"), cert)
    copy(os.path.join(tmp, "one.key"), key)
    ctx = ssl.create_default_context(cafile=os.path.join(tmp, "ca.pem"))
    node = h.Server("--tls-cert", cert, "--tls-key", key, node_id="node-reload-tls",
                    name="node-reload-tls", config={}, ssl_context=ctx).start()
    path = os.path.join(node._tmpdir, "chorus.json")
    try:
        assert await asyncio.to_thread(served_cn, node.port, ctx) == "one"
        held = await h.Client.connect(node.ws_url, ssl=ctx)
        copy(os.path.join(tmp, "two.pem"), cert)
        copy(os.path.join(tmp, "two.key"), key)
        await hup(node, path, {}, 1)
        await wait_log(node, f"event=reload_changed key=tls-cert file={cert}")
        assert await asyncio.to_thread(served_cn, node.port, ctx) == "two"
        await held.ping()                            # the open connection is untouched
        fresh = await h.Client.connect(node.ws_url, ssl=ctx)
        await fresh.ping()
        # A key of another certificate: refused, "two" stays.
        copy(os.path.join(tmp, "one.key"), key)
        await hup(node, path, {}, 2)
        await wait_log(node, "event=reload_failed key=tls-cert")
        assert await asyncio.to_thread(served_cn, node.port, ctx) == "two"
        for c in (held, fresh):
            await c.close()
    finally:
        code = node.terminate()
        assert code == 0, node.log_tail()


if __name__ == "__main__":
    h.main()
