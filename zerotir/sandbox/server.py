"""The sandbox as an HTTP/JSON service (`zerotir sandbox serve`); the client is `client.RemoteSandbox`.

Endpoints (JSON; all but /health and /v1/ping need the token when the server has one):

  zerotir API (api="zerotir" or "both"):
    GET    /health                         {"ok": true, "workers": N, "alive": N, ..., "sessions": N}
    GET    /metrics                        Prometheus text: executions by status, latency sum/count, sessions
    POST   /v1/exec        {code, timeout_s?, id?}             -> ExecResult fields + "id"
    POST   /v1/batch       {requests: [{code, timeout_s?, id?}, ...]} -> {"results": [...]} (input order)
    POST   /v1/sessions                                        -> {"session": sid}
    POST   /v1/sessions/{sid}/exec  {code, timeout_s?, id?}    -> ExecResult fields + "id"
    POST   /v1/sessions/{sid}/fork                             -> {"session": new sid}  (409 when it cannot fork)
    DELETE /v1/sessions/{sid}                                  -> {"closed": true}
  SandboxFusion API (api="sandboxfusion" or "both"; schema and differences in fusion.py):
    POST   /run_code                       RunCodeRequest -> RunCodeResponse
    GET    /v1/ping                        "pong"

Both APIs are served by default (`api="both"`): one URL change moves a SandboxFusion user over, and our own client
keeps working against the same process.

Safe by default:
  * Token: `Authorization: Bearer <token>`. Clients that cannot set headers (verl's SandboxFusion client posts to a
    bare URL) may put it in the URL of /run_code only: `http://host:port/run_code?token=<token>`. The access log is
    off, so the token is not written there.
  * Binding anything but loopback without a token is refused (`check_bind`) unless `insecure_no_token=True`.
  * Body size (`max_body_bytes`) and batch size (`max_batch`) are capped: over either, HTTP 413 with a JSON reason.
  * Per-client concurrency: each client (its `X-Zerotir-Client` header, else its address) has at most
    `per_client_concurrency` executions in the pool at once; the rest of its calls wait in its own queue (beyond
    `per_client_queue` waiting: HTTP 429). A flooding client therefore holds a bounded share of the pool's queue
    and another client's call waits behind at most that share. This is fairness among callers that hold the token,
    not protection against one that wants to deny service (it can send many client ids).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import ipaddress
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from zerotir.sandbox import fusion
from zerotir.sandbox.protocol import SandboxLike
from zerotir.types import ExecResult

log = logging.getLogger("zerotir.sandbox.server")
APIS = ("both", "zerotir", "sandboxfusion")
CLIENT_HEADER = "X-Zerotir-Client"


@dataclass(frozen=True)
class ServerLimits:
    """What one server accepts."""

    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body; larger ones get HTTP 413."""
    max_batch: int = 1024
    """Most requests in one /v1/batch call; more get HTTP 413."""
    per_client_concurrency: int = 32
    """Most executions one client has in the pool at once (its further calls wait in its own queue)."""
    per_client_queue: int = 4096
    """Most calls one client may have waiting beyond that; more get HTTP 429."""
    max_sessions: int = 4096
    """Most open sessions on the server; opening more gets HTTP 429."""
    max_timeout_s: float = 600.0
    """Largest per-call timeout a request may ask for."""
    session_ttl_s: float = 900.0
    """Sessions idle this long are closed."""


def is_loopback(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine ('' and 0.0.0.0 mean every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False


def check_bind(host: str, token: str, insecure_no_token: bool = False) -> None:
    """Refuse to serve code execution to the network without a token (raises ValueError naming the way out)."""
    if token or is_loopback(host):
        return
    if not insecure_no_token:
        raise ValueError(f"refusing to serve the sandbox on {host!r} without a token: anyone who can reach it could run "
                         "code. Set --token (or ZEROTIR_SANDBOX_TOKEN), bind 127.0.0.1, or pass --insecure-no-token")
    log.warning("serving the sandbox on %s WITHOUT a token (--insecure-no-token): anyone who can reach it can run "
                "code", host)


class TooBusy(Exception):
    """A client has more calls waiting than its queue allows."""


class ClientGate:
    """Per-client slots: at most `cap` calls of one client run at once; at most `queue` more wait."""

    def __init__(self, cap: int, queue: int):
        if cap < 1:
            raise ValueError("per_client_concurrency must be >= 1")
        self.cap, self.queue = cap, queue
        self._sem: dict[str, asyncio.Semaphore] = {}
        self._pending: collections.Counter = collections.Counter()

    def admit(self, key: str, n: int = 1) -> None:
        """Raise TooBusy when `n` more calls would overflow the client's queue (checked before any of them starts)."""
        if self._pending[key] + n > self.cap + self.queue:
            raise TooBusy(f"client {key!r} has {self._pending[key]} calls in flight or waiting "
                          f"(cap {self.cap} running + {self.queue} waiting)")

    @contextlib.asynccontextmanager
    async def slot(self, key: str):
        sem = self._sem.get(key)
        if sem is None:
            sem = self._sem[key] = asyncio.Semaphore(self.cap)
        self._pending[key] += 1
        try:
            async with sem:
                yield
        finally:
            self._pending[key] -= 1
            if self._pending[key] <= 0:  # forget idle clients (the table stays as small as the active set)
                del self._pending[key]
                self._sem.pop(key, None)


def _json_error(status: int, msg: str, key: str = "error"):
    from aiohttp import web

    return web.json_response({key: msg}, status=status)


def _raise(status: int, msg: str, key: str = "error"):
    from aiohttp import web

    exc = {400: web.HTTPBadRequest, 404: web.HTTPNotFound, 409: web.HTTPConflict, 413: web.HTTPRequestEntityTooLarge,
           422: web.HTTPUnprocessableEntity, 429: web.HTTPTooManyRequests}[status]
    kw = {"max_size": 0, "actual_size": 0} if status == 413 else {}
    raise exc(text=json.dumps({key: msg}), content_type="application/json", **kw)


def make_app(sb: SandboxLike, token: str = "", api: str = "both", limits: ServerLimits | None = None):
    """An aiohttp application serving `sb` (a local Sandbox)."""
    from aiohttp import web

    if api not in APIS:
        raise ValueError(f"api must be one of {APIS}, got {api!r}")
    lim = limits or ServerLimits()
    gate = ClientGate(lim.per_client_concurrency, lim.per_client_queue)
    sessions: dict[str, tuple[Any, float]] = {}
    counts: collections.Counter = collections.Counter()
    latency = {"sum": 0.0, "count": 0}
    open_paths = {"/health", "/v1/ping"}

    def authorized(request) -> bool:
        if not token:
            return True
        want = f"Bearer {token}".encode()
        if hmac.compare_digest(request.headers.get("Authorization", "").encode(), want):
            return True
        return request.path == "/run_code" and hmac.compare_digest(request.query.get("token", "").encode(),
                                                                   token.encode())

    @web.middleware
    async def guard(request, handler):
        if request.path not in open_paths and not authorized(request):
            return _json_error(401, "unauthorized: send 'Authorization: Bearer <token>'")
        if request.content_length is not None and request.content_length > lim.max_body_bytes:
            return _json_error(413, f"request body of {request.content_length} bytes is over the server's limit of "
                                    f"{lim.max_body_bytes} bytes (max_body_bytes)")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge as e:  # a chunked body that grew past the cap while being read
            if e.content_type == "application/json":
                raise
            return _json_error(413, f"request body is over the server's limit of {lim.max_body_bytes} bytes "
                                    "(max_body_bytes)")
        except TooBusy as e:
            return _json_error(429, str(e))

    def client_key(request) -> str:
        return request.headers.get(CLIENT_HEADER) or request.remote or "?"

    async def body(request, key: str = "error") -> dict:
        try:
            obj = await request.json()
        except (ValueError, UnicodeDecodeError):
            _raise(400, "body is not JSON", key)
        if not isinstance(obj, dict):
            _raise(400, "body must be a JSON object", key)
        return obj

    def parse_req(obj: dict) -> tuple[str, float | None, str]:
        code, t = obj.get("code"), obj.get("timeout_s")
        if not isinstance(code, str):
            _raise(400, "field 'code' must be a string")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= lim.max_timeout_s):
            _raise(400, f"field 'timeout_s' must be in (0, {lim.max_timeout_s:g}]")
        return code, (float(t) if t is not None else None), str(obj.get("id") or uuid.uuid4().hex)

    def record(r: ExecResult) -> ExecResult:
        counts[r.status] += 1
        latency["sum"] += r.duration_s
        latency["count"] += 1
        return r

    async def gated(key: str, runner, code: str, t: float | None) -> ExecResult:
        async with gate.slot(key):
            return record(await runner.arun(code, timeout_s=t))

    async def exec_one(request):
        key = client_key(request)
        code, t, rid = parse_req(await body(request))
        gate.admit(key)
        return web.json_response(dict((await gated(key, sb, code, t)).to_dict(), id=rid))

    async def batch(request):
        key = client_key(request)
        reqs = (await body(request)).get("requests")
        if not isinstance(reqs, list):
            _raise(400, "'requests' must be a list of {code, timeout_s?, id?}")
        if len(reqs) > lim.max_batch:
            _raise(413, f"batch of {len(reqs)} requests is over the server's limit of {lim.max_batch} (max_batch); "
                        "split it")
        parsed = [parse_req(x if isinstance(x, dict) else {}) for x in reqs]
        gate.admit(key, len(parsed))
        results = await asyncio.gather(*(gated(key, sb, c, t) for c, t, _ in parsed))
        return web.json_response({"results": [dict(r.to_dict(), id=rid) for (_c, _t, rid), r in zip(parsed, results)]})

    def get_session(request):
        sid = request.match_info["sid"]
        if sid not in sessions:
            _raise(404, f"no session {sid}")
        s, _ = sessions[sid]
        sessions[sid] = (s, time.monotonic())
        return s

    def add_session(s) -> str:
        if len(sessions) >= lim.max_sessions:
            s.close()
            _raise(429, f"the server holds {len(sessions)} sessions (max_sessions); close some")
        sid = uuid.uuid4().hex
        sessions[sid] = (s, time.monotonic())
        return sid

    async def new_session(request):
        return web.json_response({"session": add_session(sb.session())})

    async def session_exec(request):
        key, s = client_key(request), get_session(request)
        code, t, rid = parse_req(await body(request))
        gate.admit(key)
        return web.json_response(dict((await gated(key, s, code, t)).to_dict(), id=rid))

    async def session_fork(request):
        s = get_session(request)
        try:
            child = await asyncio.get_running_loop().run_in_executor(None, s.fork)
        except RuntimeError as e:  # SandboxForkError: say so; the client raises it on its side
            _raise(409, f"fork failed: {e}")
        return web.json_response({"session": add_session(child)})

    async def session_close(request):
        s = get_session(request)
        sessions.pop(request.match_info["sid"], None)
        await asyncio.get_running_loop().run_in_executor(None, s.close)
        return web.json_response({"closed": True})

    async def run_code(request):
        key = client_key(request)
        try:
            req = fusion.parse_request(await body(request, "detail"), lim.max_timeout_s)
        except fusion.UnsupportedRequest as e:
            return web.json_response(fusion.sandbox_error(str(e)))
        except ValueError as e:
            _raise(422, str(e), "detail")
        gate.admit(key)
        return web.json_response(fusion.response(await gated(key, sb, fusion.program(req), req.run_timeout)))

    async def ping(request):
        return web.json_response("pong")

    async def health(request):
        h = await asyncio.get_running_loop().run_in_executor(None, sb.health)
        h["sessions"] = len(sessions)
        return web.json_response(h, status=200 if h.get("ok") else 503)

    async def metrics(request):
        lines = ["# TYPE zerotir_sandbox_executions_total counter"]
        for st in ("ok", "error", "timeout", "oom", "killed", "sandbox_error"):
            lines.append(f'zerotir_sandbox_executions_total{{status="{st}"}} {counts[st]}')
        lines += ["# TYPE zerotir_sandbox_latency_seconds summary",
                  f"zerotir_sandbox_latency_seconds_sum {latency['sum']:.6f}",
                  f"zerotir_sandbox_latency_seconds_count {latency['count']}",
                  "# TYPE zerotir_sandbox_sessions gauge", f"zerotir_sandbox_sessions {len(sessions)}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def reaper(app):
        async def loop():
            while True:
                await asyncio.sleep(min(30.0, lim.session_ttl_s / 2))
                now = time.monotonic()
                for sid, (s, seen) in list(sessions.items()):
                    if now - seen > lim.session_ttl_s:
                        sessions.pop(sid, None)
                        await asyncio.get_running_loop().run_in_executor(None, s.close)
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        for s, _ in sessions.values():
            s.close()
        sessions.clear()

    # The body cap is enforced by the guard (a JSON 413); aiohttp's own limit stays as a backstop just above it.
    app = web.Application(middlewares=[guard], client_max_size=lim.max_body_bytes + 1)
    app.add_routes([web.get("/health", health), web.get("/metrics", metrics), web.get("/v1/ping", ping)])
    if api in ("both", "zerotir"):
        app.add_routes([web.post("/v1/exec", exec_one), web.post("/v1/batch", batch),
                        web.post("/v1/sessions", new_session), web.post("/v1/sessions/{sid}/exec", session_exec),
                        web.post("/v1/sessions/{sid}/fork", session_fork),
                        web.delete("/v1/sessions/{sid}", session_close)])
    if api in ("both", "sandboxfusion"):
        app.add_routes([web.post("/run_code", run_code)])
    app.cleanup_ctx.append(reaper)
    return app


def serve(sb: SandboxLike, host: str = "127.0.0.1", port: int = 8080, token: str = "", *, api: str = "both",
          insecure_no_token: bool = False, limits: ServerLimits | None = None) -> None:
    """Serve until interrupted (refuses a non-loopback bind without a token; see `check_bind`)."""
    from aiohttp import web

    check_bind(host, token, insecure_no_token)
    # access_log=None: a /run_code?token=... URL must not end up in a log file.
    web.run_app(make_app(sb, token=token, api=api, limits=limits), host=host, port=port, print=None, access_log=None)
