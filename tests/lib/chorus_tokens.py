"""JWTs for the Chorus tests (integration, faults), made without any JWT library so a
test can also make the tokens no library will: alg none, a wrong algorithm,
a forged signature, garbage.

HS256 is signed with the standard library (hmac); RS256 and ES256 with the
`openssl` command (keys are generated with it at test time, in a temporary
directory). ES256 signatures are converted from OpenSSL's DER to the JOSE
r||s form.
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import tempfile
import time

SECRET = "integration-test-secret-of-32-by"


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header, claims):
    """The signing input: base64url(header).base64url(claims)."""
    h = header if isinstance(header, (str, bytes)) else json.dumps(header, separators=(",", ":"))
    c = claims if isinstance(claims, (str, bytes)) else json.dumps(claims, separators=(",", ":"))
    return f"{b64url(h)}.{b64url(c)}"


def claims(sub="42", ttl=600, **extra):
    """Claims with sub and exp (ttl seconds from now); sub=None leaves it out;
    extra may override exp/nbf or add info, channels, ch."""
    c = {"exp": int(time.time()) + ttl}
    if sub is not None:
        c["sub"] = sub
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def hs256(c, secret=SECRET, header=None, alg="HS256"):
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    head = header or {"alg": alg, "typ": "JWT"}
    signing_input = compact(head, c)
    key = secret.encode() if isinstance(secret, str) else secret
    sig = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(sig)}"


def compact_hs256(c, secret=SECRET):
    """The shortest HS256 form (no typ), for the Sec-WebSocket-Protocol transport."""
    return hs256(c, secret, header={"alg": "HS256"})


def alg_none(c):
    return f"{compact({'alg': 'none', 'typ': 'JWT'}, c)}."


class Keys:
    """An RSA 2048 and a P-256 key pair made with openssl, as PEM files."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="chorus-keys-")
        self.rsa_key = self._gen("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        self.rsa_pub = self._pub(self.rsa_key, "rsa")
        self.rsa2_key = self._gen("rsa2", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        self.ec_key = self._gen("ec", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
        self.ec_pub = self._pub(self.ec_key, "ec")

    def _gen(self, name, args):
        path = os.path.join(self.dir, f"{name}.key")
        subprocess.run(["openssl", "genpkey", *args, "-out", path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return path

    def _pub(self, key, name):
        path = os.path.join(self.dir, f"{name}.pub")
        subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return path

    def _sign(self, key, data):
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=data.encode(),
                              check=True, stdout=subprocess.PIPE).stdout

    def rs256(self, c, key=None):
        signing_input = compact({"alg": "RS256", "typ": "JWT"}, c)
        return f"{signing_input}.{b64url(self._sign(key or self.rsa_key, signing_input))}"

    def es256(self, c):
        signing_input = compact({"alg": "ES256", "typ": "JWT"}, c)
        der = self._sign(self.ec_key, signing_input)
        return f"{signing_input}.{b64url(_der_to_raw(der))}"

    def public_pem(self):
        with open(self.rsa_pub) as f:
            return f.read()

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def _der_to_raw(der):
    """ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } -> r||s, 32 bytes each."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\x00")
        out += v.rjust(32, b"\x00")
        i += 2 + n
    return out
