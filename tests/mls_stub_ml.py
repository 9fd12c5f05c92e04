"""A stand-in ML backend speaking Label Studio's ML protocol over HTTP, recording what it is asked.

It is not the plugin's: the seam tests register it in Label Studio to prove that Label Studio's own path
for other backends is unchanged by the plugin.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_VERSION = "stub-v1"


def box(label: str = "Car", x: float = 10.0) -> dict:
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "value": {"x": x, "y": 20.0, "width": 30.0, "height": 10.0, "rotation": 0, "rectanglelabels": [label]}}


class StubBackend:
    """``with StubBackend() as stub:`` serves on 127.0.0.1; ``stub.calls`` lists ``(method, route, body)``."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._answer("GET", {})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self._answer("POST", json.loads(self.rfile.read(length) or b"{}"))

            def _answer(self, method: str, body: dict):
                route = self.path.strip("/").split("?")[0]
                with stub._lock:
                    stub.calls.append((method, route, body))
                status, reply = stub.reply(method, route, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @staticmethod
    def reply(method: str, route: str, body: dict) -> tuple[int, dict]:
        if route == "health":
            return 200, {"status": "UP", "model_class": "Stub"}
        if route == "setup":
            return 200, {"model_version": MODEL_VERSION}
        if route == "versions":
            return 200, {"versions": [MODEL_VERSION, "stub-v0"]}
        if route == "predict":
            context = (body.get("params") or {}).get("context") or {}
            if context.get("result"):  # interactive: answer about the region drawn
                return 200, {"results": [{"result": [box("Person", x=55.0)], "score": 0.9,
                                          "model_version": MODEL_VERSION}]}
            return 200, {"results": [{"result": [box()], "score": 0.5, "model_version": MODEL_VERSION}
                                     for _ in body.get("tasks") or []]}
        if route == "webhook":
            return 201, {"status": "ok", "job_id": "stub-job"}
        return 404, {"error": f"no route {route}"}

    def routes(self) -> list[str]:
        with self._lock:
            return [route for _, route, _ in self.calls]

    def bodies(self, route: str) -> list[dict]:
        with self._lock:
            return [body for _, name, body in self.calls if name == route]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def __enter__(self) -> StubBackend:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
