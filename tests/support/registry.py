"""A minimal in-process server speaking the subset of Confluent Schema Registry's REST API that
confluent-kafka's SchemaRegistryClient uses to register and fetch schemas.

No Schema Registry is installable on this machine (it is a JVM service outside the package
registries we reach), so the tests exercise the real client library and the real wire format
against this stand-in of the server.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: dict[str, int] = {}
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}

    def register(self, subject: str, schema: str) -> tuple[int, int]:
        with self.lock:
            schema_id = self.ids.setdefault(schema, len(self.ids) + 1)
            self.schemas[schema_id] = schema
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id, versions.index(schema_id) + 1


def _handler(store: _Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            m = re.match(r"^/subjects/([^/?]+)/versions", self.path)
            if not m:
                self._send(404, {"error_code": 404, "message": "not found"})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            schema_id, version = store.register(m.group(1), body["schema"])
            self._send(200, {"id": schema_id, "subject": m.group(1), "version": version,
                             "schema": body["schema"], "schemaType": "AVRO"})

        def do_GET(self) -> None:
            m = re.match(r"^/schemas/ids/(\d+)", self.path)
            if m and int(m.group(1)) in store.schemas:
                self._send(200, {"schema": store.schemas[int(m.group(1))], "schemaType": "AVRO"})
                return
            self._send(404, {"error_code": 40403, "message": "Schema not found"})

    return Handler


@contextmanager
def registry_server() -> Iterator[str]:
    """Run the stand-in registry on a free loopback port; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(_Store()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
