"""Service account tokens: the JWTs kube-apiserver signs, and its checks when one comes back.

Two kinds, as in Kubernetes v1.36:

- **bound tokens** (TokenRequest, `kubectl create token`, a pod's projected token): issuer
  `ISSUER`, audiences, `exp`/`nbf`/`iat`, a `jti`, and `kubernetes.io` claims naming the
  ServiceAccount and maybe the Pod, Secret or Node it is bound to. The token authenticates
  while it has not expired (with go-jose's minute of leeway), its audiences include the API
  server's, and the ServiceAccount and the bound object still exist with the uids it names.
- **legacy tokens** (Secrets of type `kubernetes.io/service-account-token`, filled by the tokens
  controller): issuer `kubernetes/serviceaccount`, flat claims, no expiry. The token
  authenticates while its Secret holds exactly it and the ServiceAccount still exists.

Tokens are RS256 JWTs signed with a key made when the server starts, so they are checked by
signature and claims, not looked up: nothing is remembered per token. A token the server did
not sign (another run's, a cluster's) is no token at all, and the answer is 401.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .identity import UserInfo
from .store import ResKey

# What `--service-account-issuer` says on the real cluster the suites run against (kubeadm's
# default); the API server's audiences default to it.
ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (ISSUER,)
LEGACY_ISSUER = "kubernetes/serviceaccount"
# go-jose's DefaultLeeway: `exp`, `nbf` and `iat` are judged a minute generously.
LEEWAY = 60
# A bound object (or the ServiceAccount) deleted with a grace period still counts this long
# after its deletionTimestamp, as in the API server's validator.
DELETION_GRACE = 60
# A pod-bound token asked for with exactly 3607 s (kubelet's projected token) is made valid
# for a year and only warned about after 3607 s (`--service-account-extend-token-expiration`).
WARN_ONLY_SECONDS = 3607
EXTENDED_SECONDS = 365 * 24 * 3600

SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"
EXTRA_PREFIX = "authentication.kubernetes.io/"
CREDENTIAL_ID = EXTRA_PREFIX + "credential-id"

SERVICE_ACCOUNTS: ResKey = ("", "serviceaccounts")
SECRETS: ResKey = ("", "secrets")
PODS: ResKey = ("", "pods")
NODES: ResKey = ("", "nodes")
BOUND_KEYS: dict[str, ResKey] = {"pod": PODS, "secret": SECRETS, "node": NODES}

# The legacy token's claims, as `serviceaccount.LegacyClaims` names them.
LEGACY_NAMESPACE = "kubernetes.io/serviceaccount/namespace"
LEGACY_SECRET = "kubernetes.io/serviceaccount/secret.name"
LEGACY_ACCOUNT = "kubernetes.io/serviceaccount/service-account.name"
LEGACY_UID = "kubernetes.io/serviceaccount/service-account.uid"

Lookup = Callable[[ResKey, str, str], dict[str, Any] | None]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _compact(value: Any) -> bytes:
    # Go's encoding/json writes map keys sorted and no spaces; the claims are maps there.
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def service_account_user(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return (SA_GROUP, f"{SA_GROUP}:{namespace}")


@dataclass(frozen=True)
class Ref:
    """A bound object as a token's `kubernetes.io` claims name it."""

    name: str
    uid: str

    def claim(self) -> dict[str, str]:
        return {"name": self.name, "uid": self.uid}


@dataclass(frozen=True)
class LegacyUse:
    """Which token Secret a legacy token came from: its use is tracked on the Secret."""

    namespace: str
    secret: str


class Issuer:
    """Signs service account tokens and authenticates them when they come back."""

    def __init__(
        self,
        lookup: Lookup,
        clock: Callable[[], float] = time.time,
        legacy_used: Callable[[LegacyUse], None] | None = None,
    ) -> None:
        self._lookup = lookup
        self._clock = clock
        self._legacy_used = legacy_used
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # kube-apiserver's key id: the SHA-256 of the DER public key, base64url.
        self._header = _b64(
            _compact({"alg": "RS256", "kid": _b64(hashlib.sha256(public).digest())})
        )

    def now(self) -> float:
        return self._clock()

    # -- issuing ----------------------------------------------------------------------------

    def _sign(self, claims: dict[str, Any]) -> str:
        signing_input = f"{self._header}.{_b64(_compact(claims))}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def bound_token(
        self,
        account: dict[str, Any],
        audiences: list[str],
        seconds: int,
        *,
        issued: float,
        pod: Ref | None = None,
        secret: Ref | None = None,
        node: Ref | None = None,
        warn_after: int = 0,
    ) -> str:
        """A TokenRequest's token: valid `seconds` from `issued` for `audiences`."""
        meta = account["metadata"]
        private: dict[str, Any] = {
            "namespace": meta["namespace"],
            "serviceaccount": {"name": meta["name"], "uid": meta["uid"]},
        }
        for field, ref in (("pod", pod), ("secret", secret), ("node", node)):
            if ref is not None:
                private[field] = ref.claim()
        if warn_after:
            private["warnafter"] = int(issued) + warn_after
        claims = {
            "aud": list(audiences),
            "exp": int(issued) + seconds,
            "iat": int(issued),
            "iss": ISSUER,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": private,
            "nbf": int(issued),
            "sub": service_account_user(meta["namespace"], meta["name"]),
        }
        return self._sign(claims)

    def legacy_token(self, account: dict[str, Any], secret_name: str) -> str:
        """The never-expiring token the tokens controller writes into a token Secret."""
        meta = account["metadata"]
        return self._sign(
            {
                "iss": LEGACY_ISSUER,
                LEGACY_NAMESPACE: meta["namespace"],
                LEGACY_SECRET: secret_name,
                LEGACY_ACCOUNT: meta["name"],
                LEGACY_UID: meta["uid"],
                "sub": service_account_user(meta["namespace"], meta["name"]),
            }
        )

    # -- authenticating ---------------------------------------------------------------------

    def authenticate(self, token: str) -> UserInfo | None:
        """The ServiceAccount a token stands for, or None when it is not (or no longer) one
        of this server's valid tokens."""
        claims = self._verified_claims(token)
        if claims is None:
            return None
        try:
            if claims.get("iss") == ISSUER:
                return self._bound_user(claims)
            if claims.get("iss") == LEGACY_ISSUER:
                return self._legacy_user(token, claims)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return None

    def _verified_claims(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            if not isinstance(header, dict) or header.get("alg") != "RS256":
                return None
            self._key.public_key().verify(
                _unb64(parts[2]),
                f"{parts[0]}.{parts[1]}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, binascii.Error, InvalidSignature, UnicodeDecodeError):
            return None
        return claims if isinstance(claims, dict) else None

    def _live(self, key: ResKey, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        """The object a token names, if it still exists with that uid and is not past the
        grace the validator gives an object being deleted."""
        obj = self._lookup(key, namespace, name)
        if obj is None or obj["metadata"].get("uid") != uid:
            return None
        deleting = obj["metadata"].get("deletionTimestamp")
        if deleting:
            since = datetime.fromisoformat(deleting.replace("Z", "+00:00"))
            if since.astimezone(UTC).timestamp() < self.now() - DELETION_GRACE:
                return None
        return obj

    def _bound_user(self, claims: dict[str, Any]) -> UserInfo | None:
        audiences = claims.get("aud")
        if isinstance(audiences, str):
            audiences = [audiences]
        if not set(audiences or ()) & set(API_AUDIENCES):
            return None
        now = self.now()
        if now > int(claims["exp"]) + LEEWAY:
            return None
        if now + LEEWAY < int(claims.get("nbf", 0)) or now + LEEWAY < int(claims.get("iat", 0)):
            return None
        private = claims["kubernetes.io"]
        namespace = private["namespace"]
        account = private["serviceaccount"]
        if self._live(SERVICE_ACCOUNTS, namespace, account["name"], account["uid"]) is None:
            return None
        extra: dict[str, tuple[str, ...]] = {}
        if claims.get("jti"):
            extra[CREDENTIAL_ID] = (f"JTI={claims['jti']}",)
        for field in ("pod", "secret"):
            ref = private.get(field)
            if ref is None:
                continue
            if self._live(BOUND_KEYS[field], namespace, ref["name"], ref["uid"]) is None:
                return None
            if field == "pod":
                extra[EXTRA_PREFIX + "pod-name"] = (ref["name"],)
                extra[EXTRA_PREFIX + "pod-uid"] = (ref["uid"],)
        node = private.get("node")
        if node is not None:
            # The local API serves no Node objects: a pod's node is named, never looked up.
            if node.get("name"):
                extra[EXTRA_PREFIX + "node-name"] = (node["name"],)
            if node.get("uid"):
                extra[EXTRA_PREFIX + "node-uid"] = (node["uid"],)
        return UserInfo(
            service_account_user(namespace, account["name"]),
            service_account_groups(namespace),
            account["uid"],
            tuple(sorted(extra.items())),
        )

    def _legacy_user(self, token: str, claims: dict[str, Any]) -> UserInfo | None:
        namespace = claims[LEGACY_NAMESPACE]
        secret = self._lookup(SECRETS, namespace, claims[LEGACY_SECRET])
        if secret is None or secret["metadata"].get("deletionTimestamp"):
            return None
        held = (secret.get("data") or {}).get("token") or ""
        if _unb64_std(held) != token.encode():
            return None
        account = self._lookup(SERVICE_ACCOUNTS, namespace, claims[LEGACY_ACCOUNT])
        if (
            account is None
            or account["metadata"].get("uid") != claims[LEGACY_UID]
            or account["metadata"].get("deletionTimestamp")
        ):
            return None
        if self._legacy_used is not None:
            self._legacy_used(LegacyUse(namespace, claims[LEGACY_SECRET]))
        return UserInfo(
            service_account_user(namespace, claims[LEGACY_ACCOUNT]),
            service_account_groups(namespace),
            claims[LEGACY_UID],
        )


def _unb64_std(text: str) -> bytes:
    try:
        return base64.b64decode(text)
    except (ValueError, binascii.Error):
        return b""
