"""`python -m kubeapi.loadtest`: how many writes a second the local API sustains.

Starts a server, opens cluster-wide watches, then creates N custom objects and N RoleBindings
(the shape of Lapse's benchmark), updates every object's status once and deletes them, with a
fixed number of concurrent clients. Prints writes per second for each phase and checks that
the watches saw every event.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from kubeapi.process import LocalServer

GROUP = "load.lapse.dev"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"items.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "items", "singular": "item", "kind": "Item"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "role": {"type": "string"},
                                    "duration": {"type": "string"},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


class Client:
    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        self.base = config["clusters"][0]["cluster"]["server"]
        ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        self.ssl = ssl.create_default_context(cadata=ca.decode())
        self.headers = {"Authorization": f"Bearer {config['users'][0]['user']['token']}"}
        self.session = aiohttp.ClientSession(
            headers=self.headers, connector=aiohttp.TCPConnector(ssl=self.ssl, limit=0)
        )

    async def call(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> Any:
        async with self.session.request(
            method, self.base + path, json=body, headers={"Content-Type": ctype}
        ) as response:
            data = await response.json()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {data}")
            return data

    async def count_events(self, path: str, counts: dict[str, int], ready: asyncio.Event) -> None:
        async with self.session.get(self.base + path, timeout=aiohttp.ClientTimeout()) as resp:
            ready.set()
            async for line in resp.content:
                if b'"type":"ADDED"' in line[:20]:
                    counts["ADDED"] += 1
                elif b'"type":"MODIFIED"' in line[:20]:
                    counts["MODIFIED"] += 1
                elif b'"type":"DELETED"' in line[:20]:
                    counts["DELETED"] += 1


async def phase(name: str, jobs: list[Any], concurrency: int) -> float:
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            await queue.pop()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    rate = len(jobs) / elapsed
    print(f"{name:<28} {len(jobs):>6} writes in {elapsed:6.2f}s = {rate:7.0f} writes/s")
    return rate


async def run(kubeconfig: Path, n: int, concurrency: int, namespaces: int) -> None:
    client = Client(kubeconfig)
    try:
        await client.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
        names = [f"load-{i}" for i in range(namespaces)]
        for name in names:
            await client.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        items: dict[str, int] = {"ADDED": 0, "MODIFIED": 0, "DELETED": 0}
        bindings: dict[str, int] = {"ADDED": 0, "MODIFIED": 0, "DELETED": 0}
        ready = [asyncio.Event(), asyncio.Event()]
        rv = (await client.call("GET", f"/apis/{GROUP}/v1/items?limit=1"))["metadata"][
            "resourceVersion"
        ]
        watches = [
            asyncio.create_task(
                client.count_events(
                    f"/apis/{GROUP}/v1/items?watch=true&resourceVersion={rv}", items, ready[0]
                )
            ),
            asyncio.create_task(
                client.count_events(
                    f"/apis/rbac.authorization.k8s.io/v1/rolebindings?watch=true&resourceVersion={rv}",
                    bindings,
                    ready[1],
                )
            ),
        ]
        await asyncio.gather(*(r.wait() for r in ready))

        def ns(i: int) -> str:
            return names[i % namespaces]

        def item(i: int) -> dict[str, Any]:
            return {
                "apiVersion": f"{GROUP}/v1",
                "kind": "Item",
                "metadata": {"name": f"i{i}"},
                "spec": {"role": "edit", "duration": "1h"},
            }

        def binding(i: int) -> dict[str, Any]:
            return {
                "metadata": {"name": f"b{i}", "labels": {"app": "lapse"}},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "edit",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"user{i}"}
                ],
            }

        rates = [
            await phase(
                "create custom objects",
                [
                    client.call("POST", f"/apis/{GROUP}/v1/namespaces/{ns(i)}/items", item(i))
                    for i in range(n)
                ],
                concurrency,
            ),
            await phase(
                "create rolebindings",
                [
                    client.call(
                        "POST",
                        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns(i)}/rolebindings",
                        binding(i),
                    )
                    for i in range(n)
                ],
                concurrency,
            ),
            await phase(
                "patch status",
                [
                    client.call(
                        "PATCH",
                        f"/apis/{GROUP}/v1/namespaces/{ns(i)}/items/i{i}/status",
                        {"status": {"phase": "Active"}},
                        "application/merge-patch+json",
                    )
                    for i in range(n)
                ],
                concurrency,
            ),
        ]
        started = time.perf_counter()
        listed = await client.call("GET", f"/apis/{GROUP}/v1/items")
        print(
            f"list all {len(listed['items'])} custom objects: {time.perf_counter() - started:.2f}s"
        )
        rates += [
            await phase(
                "delete rolebindings",
                [
                    client.call(
                        "DELETE",
                        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns(i)}/rolebindings/b{i}",
                    )
                    for i in range(n)
                ],
                concurrency,
            ),
            await phase(
                "delete custom objects",
                [
                    client.call("DELETE", f"/apis/{GROUP}/v1/namespaces/{ns(i)}/items/i{i}")
                    for i in range(n)
                ],
                concurrency,
            ),
        ]
        for _ in range(600):  # the watches may trail the last answers a little
            if items["DELETED"] >= n and bindings["DELETED"] >= n:
                break
            await asyncio.sleep(0.1)
        for task in watches:
            task.cancel()
        print(f"watch events: items {items}, rolebindings {bindings}")
        assert items == {"ADDED": n, "MODIFIED": n, "DELETED": n}, items
        assert bindings == {"ADDED": n, "MODIFIED": 0, "DELETED": n}, bindings
        print(f"slowest phase: {min(rates):.0f} writes/s")
    finally:
        await client.session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10_000, help="objects of each kind")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--namespaces", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalServer(Path(tmp))
        server.start()
        try:
            asyncio.run(run(server.kubeconfig, args.n, args.concurrency, args.namespaces))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
