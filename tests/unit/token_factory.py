"""A local stand-in for the realm's signing keys, so token checks run without Keycloak."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "http://keycloak.test/realms/mlflow"
JWKS_URL = f"{ISSUER}/protocol/openid-connect/certs"
AUDIENCE = "mlflow-gate"


class Realm:
    """Holds an RSA and an EC key, publishes them as a JWKS, and mints tokens."""

    def __init__(self) -> None:
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.jwks_requests = 0

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        return {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
                {**rsa_jwk, "kid": "enc-1", "alg": "RSA-OAEP", "use": "enc"},
            ]
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url == JWKS_URL:
            self.jwks_requests += 1
            return httpx.Response(200, json=self.jwks())
        return httpx.Response(404)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "user-bob",
            "aud": [AUDIENCE, "account"],
            "azp": "mlflow-cli",
            "typ": "Bearer",
            "iat": now,
            "exp": now + 300,
            "preferred_username": "bob",
            "email": "bob@example.org",
            "realm_access": {"roles": ["Default", "offline_access"]},
        }
        claims.update(overrides)
        return {key: value for key, value in claims.items() if value is not None}

    def token(self, kid: str = "rsa-1", algorithm: str = "RS256", **overrides: Any) -> str:
        key = self.ec_key if algorithm.startswith("ES") else self.rsa_key
        return jwt.encode(self.claims(**overrides), key, algorithm=algorithm, headers={"kid": kid})
