"""Where a Service's traffic goes: endpoint addresses, and the endpoint a webhook call dials.

kube-apiserver calls an admission webhook named by `clientConfig.service` (with
`--enable-aggregator-routing=true`, as the project's real test cluster runs it) on one ready
endpoint of that Service, found in its EndpointSlices, never through cluster DNS; when it finds
none the call fails with words of its own (`service "x" not found`, `no endpoints available for
service "x"`). Those endpoints can only be where the API server may send traffic: the
validation of Endpoints and EndpointSlices refuses loopback, link-local and unspecified
addresses. The local API stores both kinds, so it resolves and validates them here the same way.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from .errors import Cause

DISCOVERY = "discovery.k8s.io"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# Endpoints carrying this label are not mirrored into EndpointSlices.
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
ROUTABLE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
_DOTTED_QUAD = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_LINK_LOCAL_MULTICAST = ipaddress.ip_network("224.0.0.0/24")


class Objects(Protocol):
    """The stored objects resolution reads (the store answers it)."""

    def get(self, key: tuple[str, str], namespace: str, name: str) -> dict[str, Any] | None: ...

    def iter(
        self, key: tuple[str, str], namespace: str | None = None
    ) -> Iterator[dict[str, Any]]: ...


class Unroutable(Exception):
    """No endpoint to call; the message is kube-apiserver's."""


# -- resolution ---------------------------------------------------------------------------


def resolve(objects: Objects | None, namespace: str, name: str, port: int) -> tuple[str, int]:
    """(address, port) of one ready endpoint of Service `namespace/name` for its port `port`,
    chosen at random among them as kube-apiserver chooses."""
    service = None if objects is None else objects.get(("", "services"), namespace, name)
    if objects is None or service is None:
        raise Unroutable(f'service "{name}" not found')
    spec = service.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    if kind not in ROUTABLE_TYPES:
        raise Unroutable(f'unsupported service type "{kind}"')
    port_name = next(
        (p.get("name") or "" for p in spec.get("ports") or () if p.get("port") == port), None
    )
    if port_name is None:
        raise Unroutable(f'no service port {port} found for service "{name}"')
    candidates = [
        target
        for piece in _slices(objects, namespace, name, bool(spec.get("selector")))
        for target in _ready_targets(piece, port_name)
    ]
    if not candidates:
        raise Unroutable(f'no endpoints available for service "{name}"')
    return random.choice(candidates)


def _slices(
    objects: Objects, namespace: str, service: str, selected: bool
) -> Iterator[Mapping[str, Any]]:
    for piece in objects.iter((DISCOVERY, "endpointslices"), namespace):
        labels = (piece.get("metadata") or {}).get("labels") or {}
        if labels.get(SERVICE_NAME_LABEL) == service:
            yield piece
    # kube-controller-manager mirrors the Endpoints of a Service without a selector into an
    # EndpointSlice; nothing runs that controller here, so they are read as it would write them.
    legacy = None if selected else objects.get(("", "endpoints"), namespace, service)
    if legacy is not None:
        labels = (legacy.get("metadata") or {}).get("labels") or {}
        if labels.get(SKIP_MIRROR_LABEL) != "true":
            yield from _mirrored(legacy)


def _mirrored(endpoints: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for subset in endpoints.get("subsets") or ():
        listed = [(a, True) for a in subset.get("addresses") or ()]
        listed += [(a, False) for a in subset.get("notReadyAddresses") or ()]
        yield {
            "addressType": "IPv4",
            "ports": subset.get("ports") or [],
            "endpoints": [
                {"addresses": [a.get("ip", "")], "conditions": {"ready": ready}}
                for a, ready in listed
            ],
        }


def _ready_targets(piece: Mapping[str, Any], port_name: str) -> list[tuple[str, int]]:
    """The slice's ready addresses on the port named like the Service's port."""
    if piece.get("addressType") not in ("IPv4", "IPv6"):
        return []
    number = next(
        (
            p.get("port")
            for p in piece.get("ports") or ()
            if (p.get("name") or "") == port_name and p.get("port")
        ),
        None,
    )
    if number is None:
        return []
    targets = []
    for endpoint in piece.get("endpoints") or ():
        # An endpoint whose readiness is unknown (no condition) counts as ready.
        if (endpoint.get("conditions") or {}).get("ready") is False:
            continue
        addresses = endpoint.get("addresses") or ()
        if addresses:
            targets.append((str(addresses[0]), int(number)))
    return targets


# -- validation ---------------------------------------------------------------------------


def _special(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Why kube-apiserver refuses an endpoint address, or ''."""
    if address.is_unspecified:
        return f"may not be unspecified ({address})"
    if address.is_loopback:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if address.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    # Go's IsLinkLocalMulticast: 224.0.0.0/24, and IPv6 multicast of link-local scope (ff?2::).
    if (address.version == 4 and address in _LINK_LOCAL_MULTICAST) or (
        address.version == 6 and address.packed[0] == 0xFF and address.packed[1] & 0x0F == 2
    ):
        return "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    return ""


def _parsed(
    field: str, value: Any, causes: list[Cause]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = str(value)
    if _DOTTED_QUAD.match(text) and any(
        len(part) > 1 and part.startswith("0") for part in text.split(".")
    ):
        causes.append(Cause(field, f'Invalid value: "{text}": must not have leading 0s'))
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        causes.append(
            Cause(
                field,
                f'Invalid value: "{text}": must be a valid IP address, '
                "(e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
        )
        return None


def _address_causes(field: str, value: Any) -> list[Cause]:
    causes: list[Cause] = []
    address = _parsed(field, value, causes)
    if address is not None and (why := _special(address)):
        causes.append(Cause(field, f'Invalid value: "{value}": {why}'))
    return causes


def slice_causes(obj: Mapping[str, Any]) -> list[Cause]:
    """What kube-apiserver refuses in an EndpointSlice's address type and addresses."""
    kind = obj.get("addressType")
    if not kind:
        return [Cause("addressType", "Required value", "FieldValueRequired")]
    if kind not in ADDRESS_TYPES:
        supported = ", ".join(f'"{t}"' for t in ADDRESS_TYPES)
        return [
            Cause(
                "addressType",
                f'Unsupported value: "{kind}": supported values: {supported}',
                "FieldValueNotSupported",
            )
        ]
    if kind == "FQDN":
        return []
    version = 4 if kind == "IPv4" else 6
    causes: list[Cause] = []
    for i, endpoint in enumerate(obj.get("endpoints") or ()):
        for j, value in enumerate((endpoint or {}).get("addresses") or ()):
            field = f"endpoints[{i}].addresses[{j}]"
            address = _parsed(field, value, causes)
            if address is None:
                continue
            if address.version != version:
                # kube-apiserver names the list here, not the entry.
                causes.append(
                    Cause(
                        f"endpoints[{i}].addresses",
                        f'Invalid value: "{value}": must be an {kind} address',
                    )
                )
            if why := _special(address):
                causes.append(Cause(field, f'Invalid value: "{value}": {why}'))
    return causes


def endpoints_causes(obj: Mapping[str, Any]) -> list[Cause]:
    """What kube-apiserver refuses in the addresses of a (legacy) Endpoints object."""
    causes: list[Cause] = []
    for i, subset in enumerate(obj.get("subsets") or ()):
        for listing in ("addresses", "notReadyAddresses"):
            for j, entry in enumerate((subset or {}).get(listing) or ()):
                field = f"subsets[{i}].{listing}[{j}].ip"
                causes += _address_causes(field, (entry or {}).get("ip", ""))
    return causes
