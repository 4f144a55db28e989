"""A small stand-in for the Wenmo HTTP server (http.server in a thread) for testing the load generator.

It serves the same routes with the same basic auth, with behaviour the tests set and can predict:
- embeddings are computed under one lock for `service_s` seconds (one request at a time, like a server with
  a concurrency cap of 1), so with n closed-loop users a request takes about n × service_s;
- every `busy_every`-th embeddings request is answered 503 (or 429) + Retry-After at once;
- /v1/nlu answers 500 (a broken route, to count errors apart from busy answers);
- /metrics exposes a resident-memory gauge that grows by `leak_mib` per scrape, plus `working_mib` for each
  embeddings request in flight at the scrape (the working memory a real server's gauge swings by), and a flat
  GPU gauge; `in_flight_at_scrapes` records how many were in flight at each scrape;
- X-Wenmo-Engine-Ms carries the time spent under the lock, unless `engine_header` is False.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MIB = 1 << 20


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up (on purpose, in the timeout test) are not news


class StubServer:
    def __init__(self, *, user: str = "u", password: str = "p", service_s: float = 0.01, busy_every: int = 0,
                 busy_status: int = 503, engine_header: bool = True, leak_mib: float = 0.0,
                 base_rss_mib: float = 300.0, working_mib: float = 0.0, ready_after_polls: int = 0) -> None:
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.service_s = service_s
        self.busy_every = busy_every
        self.busy_status = busy_status
        self.engine_header = engine_header
        self.leak_mib = leak_mib
        self.base_rss_mib = base_rss_mib
        self.working_mib = working_mib
        self.in_flight = 0
        self.in_flight_at_scrapes: list[int] = []
        self.ready_after_polls = ready_after_polls
        self.lock = threading.Lock()
        self.counter_lock = threading.Lock()
        self.embeddings = 0
        self.scrapes = 0
        self.ready_polls = 0
        self.answered = 0  # embeddings answered after their service time
        self.served: dict[str, int] = {}
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def rss_bytes(self, scrape: int, in_flight: int = 0) -> float:
        return (self.base_rss_mib + self.leak_mib * scrape + self.working_mib * in_flight) * MIB

    def _handler(self):  # noqa: ANN202
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None,
                      content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == stub.auth:
                    return True
                self._send(401, {"error": {"message": "unauthorized"}}, {"WWW-Authenticate": "Basic"})
                return False

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                if self.path == "/readyz":
                    stub.ready_polls += 1
                    ok = stub.ready_polls > stub.ready_after_polls
                    self._send(200 if ok else 503, {"status": "ready" if ok else "loading"})
                elif self.path == "/metrics":
                    with stub.counter_lock:
                        scrape = stub.scrapes
                        stub.scrapes += 1
                        in_flight = stub.in_flight
                        stub.in_flight_at_scrapes.append(in_flight)
                    text = (
                        "# HELP wenmo_http_requests_total requests\n# TYPE wenmo_http_requests_total counter\n"
                        f'wenmo_http_requests_total{{route="/v1/embeddings"}} {stub.embeddings}\n'
                        "# TYPE process_resident_memory_bytes gauge\n"
                        f"process_resident_memory_bytes {stub.rss_bytes(scrape, in_flight):.0f}\n"
                        "# TYPE wenmo_gpu_memory_used_bytes gauge\n"
                        f'wenmo_gpu_memory_used_bytes{{device="0"}} {2048 * MIB}\n'
                    )
                    self._send(200, text.encode(), content_type="text/plain; version=0.0.4")
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                body = self._body()
                stub.served[self.path] = stub.served.get(self.path, 0) + 1
                if self.path == "/v1/embeddings":
                    with stub.counter_lock:
                        stub.embeddings += 1
                        n = stub.embeddings
                    if stub.busy_every and n % stub.busy_every == 0:
                        self._send(stub.busy_status, {"error": {"message": "busy"}}, {"Retry-After": "0"})
                        return
                    with stub.counter_lock:
                        stub.in_flight += 1
                    try:
                        with stub.lock:
                            t0 = time.perf_counter()
                            time.sleep(stub.service_s)
                            engine_ms = (time.perf_counter() - t0) * 1000
                    finally:
                        with stub.counter_lock:
                            stub.in_flight -= 1
                    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    data = [{"object": "embedding", "index": i, "embedding": [0.5, 0.5, 0.5, 0.5]}
                            for i in range(len(inputs))]
                    headers = {"X-Wenmo-Engine-Ms": f"{engine_ms:.3f}"} if stub.engine_header else {}
                    self._send(200, {"object": "list", "data": data, "model": "stub",
                                     "usage": {"prompt_tokens": 1, "total_tokens": 1}}, headers)
                    with stub.counter_lock:
                        stub.answered += 1
                elif self.path == "/v1/similarity":
                    results = [{"index": i, "text": t, "cosine": 0.5} for i, t in enumerate(body["candidates"])]
                    self._send(200, {"source": body["source"], "results": results, "reranked": body["rerank"]})
                elif self.path == "/v1/nlu":
                    self._send(500, {"error": {"message": "inference failed", "type": "inference_error"}})
                else:
                    self._send(404, {"error": {"message": "not found"}})

        return Handler
