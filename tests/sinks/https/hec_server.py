"""A stand-in for Splunk's HTTP Event Collector, run in its own process by the tests.

The HTTPS sink is tested against a real TLS endpoint that answers as HEC does, not against a
mocked client: `/services/collector/event` takes newline-separated JSON envelopes, checks
`Authorization: <scheme> <token>` with HEC's statuses and bodies (401 code 2 or 3, 403 code 4),
appends each envelope it accepts to `events.jsonl` and each request to `requests.jsonl` in the
state directory, and answers `{"text":"Success","code":0}`.

The tests steer it through `control.json` in the same directory, read on every request:
`answers` is a queue, each entry used once for the next request (`status`, `delay` seconds
before answering, `retry_after`, `body`); `max_body` refuses bodies longer than it with 413, as
HEC's `max_content_length` does. A request answered from the queue stores no events.

Run as a script: `python hec_server.py --state DIR --cert ... --key ... --token ...`; it writes
the port it listens on to `DIR/port` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web

EVENT_PATH = "/services/collector/event"


def json_answer(body: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    # Compact, as HEC writes it: `{"text":"Success","code":0}`.
    text = json.dumps(body, separators=(",", ":"))
    return web.Response(text=text, status=status, headers=headers, content_type="application/json")


def hec_answer(status: int, text: str, code: int) -> web.Response:
    return json_answer({"text": text, "code": code}, status)


def parse_envelopes(body: str) -> list[Any]:
    """HEC's event body: JSON objects one after the other, whitespace between or not."""
    decoder = json.JSONDecoder()
    items: list[Any] = []
    position = 0
    while True:
        while position < len(body) and body[position].isspace():
            position += 1
        if position == len(body):
            return items
        item, position = decoder.raw_decode(body, position)
        items.append(item)


class Collector:
    def __init__(self, *, state: Path, token: str, scheme: str) -> None:
        self.state = state
        self.token = token
        self.scheme = scheme
        self.lock = asyncio.Lock()

    def append(self, name: str, item: Any) -> None:
        with (self.state / name).open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(item, ensure_ascii=False) + "\n")

    def take_answer(self) -> tuple[dict[str, Any] | None, int | None]:
        path = self.state / "control.json"
        if not path.exists():
            return None, None
        control = json.loads(path.read_text() or "{}")
        answers = control.get("answers") or []
        answer = answers.pop(0) if answers else None
        control["answers"] = answers
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(control))
        os.replace(scratch, path)
        return answer, control.get("max_body")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        async with self.lock:
            answer, max_body = self.take_answer()
        record: dict[str, Any] = {
            "bytes": len(raw),
            "auth": request.headers.get("Authorization", ""),
        }
        if answer is not None:
            status = int(answer.get("status", 503))
            self.append("requests.jsonl", {**record, "status": status})
            await asyncio.sleep(float(answer.get("delay", 0)))
            headers: dict[str, str] = {}
            if answer.get("retry_after") is not None:
                headers["Retry-After"] = str(answer["retry_after"])
            body = answer.get("body", {"text": "Server is busy", "code": 9})
            return json_answer(body, status, headers)
        refusal = self.check(request, raw, max_body)
        if refusal is not None:
            record["status"] = refusal.status
            self.append("requests.jsonl", record)
            return refusal
        try:
            envelopes = parse_envelopes(raw.decode("utf-8"))
        except ValueError:
            record["status"] = 400
            self.append("requests.jsonl", record)
            return hec_answer(400, "Invalid data format", 6)
        if not all(isinstance(e, dict) and "event" in e for e in envelopes):
            record["status"] = 400
            self.append("requests.jsonl", record)
            return hec_answer(400, "Event field is required", 12)
        async with self.lock:
            for envelope in envelopes:
                self.append("events.jsonl", envelope)
            self.append("requests.jsonl", {**record, "status": 200, "events": len(envelopes)})
        return hec_answer(200, "Success", 0)

    def check(self, request: web.Request, raw: bytes, max_body: int | None) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            return hec_answer(401, "Token is required", 2)
        scheme, _, token = header.partition(" ")
        if scheme != self.scheme or not token:
            return hec_answer(401, "Invalid authorization", 3)
        if token != self.token:
            return hec_answer(403, "Invalid token", 4)
        if max_body is not None and len(raw) > max_body:
            return hec_answer(413, "Content too large", 27)
        if not raw.strip():
            return hec_answer(400, "No data", 5)
        return None


async def serve(args: argparse.Namespace) -> None:
    state = Path(args.state)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        context.load_verify_locations(args.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    collector = Collector(state=state, token=args.token, scheme=args.scheme)
    # The sink's own max_batch_bytes is under test, not aiohttp's 1 MiB default.
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post(EVENT_PATH, collector.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=context)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    port = server.sockets[0].getsockname()[1]
    scratch = state / "port.tmp"
    scratch.write_text(str(port))
    os.replace(scratch, state / "port")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True)
    # 0.0.0.0 where the operator's pods on this host's node must reach it.
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--scheme", default="Splunk")
    parser.add_argument("--client-ca")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
