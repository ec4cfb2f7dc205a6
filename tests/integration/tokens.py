"""Tokens for the --auth jwt scenarios, minted by an implementation that is not
changegate's: Debian's python3-jwt (PyJWT 2.6) signs, python3-cryptography makes the
keys. Only the deliberately broken tokens (alg "none" variants, HS256 keyed with an RSA
public key's PEM, bad base64, exact sizes) are put together by hand here, with the
standard library's hmac and base64, because PyJWT refuses to produce them.

Keyring(directory) writes what changegate is given:
  secret_file   an HS256/384/512 secret: 64 printable bytes and a trailing newline
                (changegate strips one trailing newline, PyJWT signs with the 64 bytes)
  rs1.pem       an RSA 2048 public key (key id "rs1": the file name without extension)
  ec1.pem       an EC P-256 public key (key id "ec1")
  rot2.pem      another RSA 2048 public key, given as rot2=FILE (rotation)
and keeps a "rogue" RSA key and secret that changegate does not know (bad signatures).
"""
import base64
import hashlib
import hmac
import json
import os
import time

import jwt  # Debian's python3-jwt (PyJWT 2.6), under /usr/bin/python3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "changegate-it-audience"
ISSUER = "https://issuer.changegate-it.example"
COOKIE = "cg_token"


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def _public_pem(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _private_pem(private_key):
    return private_key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def segments(token):
    """The parts of a token worth looking for in logs and answers: its payload and
    signature segments (the header is the same in many tokens and holds nothing secret)."""
    parts = token.split(".")
    return [p for p in parts[1:] if len(p) >= 16]


class Keyring:
    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        # 64 printable bytes: HS512 needs a key as long as its hash (RFC 7518 3.2).
        self.secret = b64url(os.urandom(48))
        self.secret_file = self._write("hs.secret", (self.secret + "\n").encode())
        self.rogue_secret = b64url(os.urandom(36))
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rs1_file = self._write("rs1.pem", _public_pem(self.rsa))
        self.rs1_pem = _public_pem(self.rsa)
        self.rot2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rot2_file = self._write("rot2.pem", _public_pem(self.rot2))
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ec1_file = self._write("ec1.pem", _public_pem(self.ec))
        self.rogue_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def _write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def write(self, name, data):
        return self._write(name, data if isinstance(data, bytes) else data.encode())

    # ------------------------------------------------------------------ claims

    @staticmethod
    def claims(sub="ann", ttl=600, aud=AUDIENCE, iss=ISSUER, **extra):
        """Standard claims: sub, aud, iss, iat, exp = now + ttl (None: no exp); extra ones
        added (a value of None removes a claim)."""
        now = int(time.time())
        c = {"sub": sub, "aud": aud, "iss": iss, "iat": now}
        if ttl is not None:
            c["exp"] = now + ttl
        c.update(extra)
        return {k: v for k, v in c.items() if v is not None}

    # ------------------------------------------------------------------ PyJWT

    def hs(self, claims, alg="HS256", headers=None, secret=None):
        return jwt.encode(claims, secret or self.secret, algorithm=alg, headers=headers)

    def rs(self, claims, kid="rs1", key=None, alg="RS256"):
        return jwt.encode(claims, _private_pem(key or self.rsa), algorithm=alg,
                          headers={"kid": kid} if kid is not None else None)

    def es(self, claims, kid="ec1"):
        return jwt.encode(claims, _private_pem(self.ec), algorithm="ES256",
                          headers={"kid": kid} if kid is not None else None)

    def check_with_pyjwt(self, token, alg="HS256"):
        """Decodes a token this keyring made (a sanity check of the minting itself)."""
        return jwt.decode(token, self.secret, algorithms=[alg], audience=AUDIENCE,
                          issuer=ISSUER)

    # ------------------------------------------------------------------ by hand

    @staticmethod
    def raw(header, payload, key=b"", digest=hashlib.sha256, signature=None):
        """header.payload.signature from parts given as dicts (compact JSON), bytes (taken
        as the JSON text) or str (taken as the already-encoded segment). The signature is
        HMAC(key, signing input) unless given (str: the segment as is)."""
        def seg(x):
            if isinstance(x, dict) or isinstance(x, list):
                return b64url(compact(x))
            if isinstance(x, bytes):
                return b64url(x)
            return x
        signing_input = "%s.%s" % (seg(header), seg(payload))
        if signature is None:
            key = key.encode() if isinstance(key, str) else key
            signature = b64url(hmac.new(key, signing_input.encode("latin-1"), digest).digest())
        return signing_input + "." + signature

    def hs_raw(self, header, payload):
        """Signed with the real secret over whatever the two segments are (so that a token
        that is malformed is refused as malformed whatever changegate checks first)."""
        return self.raw(header, payload, key=self.secret)

    def confused(self, claims, kid="rs1"):
        """Algorithm confusion: HS256 keyed with the RSA public key's PEM text (PyJWT 2.6
        refuses to do this, so it is done by hand)."""
        header = {"alg": "HS256", "typ": "JWT"}
        if kid is not None:
            header["kid"] = kid
        return self.raw(header, claims, key=self.rs1_pem)

    def sized(self, claims, size):
        """An HS256 token of exactly `size` bytes, signed with the real secret: a `pad`
        claim fills it (the header's kid varies to reach lengths base64 cannot)."""
        for kid_len in range(0, 4):
            header = {"alg": "HS256", "typ": "JWT"}
            if kid_len:
                header["kid"] = "k" * kid_len
            base = dict(claims, pad="")
            t0 = self.raw(header, base, key=self.secret)
            need = size - len(t0)
            if need < 0:
                raise ValueError("claims alone make a token of %d bytes" % len(t0))
            for pad in range(max(0, need * 3 // 4 - 4), need * 3 // 4 + 4):
                t = self.raw(header, dict(claims, pad="p" * pad), key=self.secret)
                if len(t) == size:
                    return t
        raise ValueError("no token of exactly %d bytes" % size)
