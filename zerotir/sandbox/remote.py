"""The sandbox as an HTTP/JSON service, and the client that speaks to it with the same interface as `Sandbox`.

Endpoints (all JSON; every endpoint but /health needs `Authorization: Bearer <token>` when the server has a token):

    GET    /health                         {"ok": true, "workers": N, "alive": N, ...}
    GET    /metrics                        Prometheus text: executions by status, latency sum/count, sessions
    POST   /v1/exec        {code, timeout_s?, id?}             -> ExecResult fields + "id"
    POST   /v1/batch       {requests: [{code, timeout_s?, id?}, ...]} -> {"results": [...]} (input order)
    POST   /v1/sessions                                        -> {"session": sid}
    POST   /v1/sessions/{sid}/exec  {code, timeout_s?, id?}    -> ExecResult fields + "id"
    POST   /v1/sessions/{sid}/fork                             -> {"session": new sid}
    DELETE /v1/sessions/{sid}                                  -> {"closed": true}

The server binds loopback by default; sessions idle for `session_ttl_s` are closed.

Length: over 400 lines on purpose for now; splitting the sandbox by role (pool, isolation, quotas, service)
is issue 15's sandbox v2, and its hostile table must keep passing through that split.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import itertools
import json
import logging
import threading
import time
import uuid
from typing import Any

from zerotir.types import ExecResult

log = logging.getLogger("zerotir.sandbox.remote")
MAX_BODY = 4 * 1024 * 1024


# ------------------------------------------------------------------------------------------------ server


def make_app(sb, token: str = "", session_ttl_s: float = 900.0, max_batch: int = 1024):
    """An aiohttp application serving `sb` (a local Sandbox)."""
    from aiohttp import web

    sessions: dict[str, tuple[Any, float]] = {}
    counts: collections.Counter = collections.Counter()
    latency = {"sum": 0.0, "count": 0}

    def authorized(request) -> bool:
        if not token:
            return True
        got = request.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

    @web.middleware
    async def auth(request, handler):
        if request.path != "/health" and not authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    async def body(request) -> dict:
        try:
            obj = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text=json.dumps({"error": "body is not JSON"}),
                                     content_type="application/json") from None
        if not isinstance(obj, dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "body must be a JSON object"}),
                                     content_type="application/json")
        return obj

    def parse_req(obj: dict) -> tuple[str, float | None, str]:
        code, t = obj.get("code"), obj.get("timeout_s")
        if not isinstance(code, str):
            raise web.HTTPBadRequest(text=json.dumps({"error": "field 'code' must be a string"}),
                                     content_type="application/json")
        if t is not None and (not isinstance(t, (int, float)) or not 0 < t <= 600):
            raise web.HTTPBadRequest(text=json.dumps({"error": "field 'timeout_s' must be in (0, 600]"}),
                                     content_type="application/json")
        return code, (float(t) if t is not None else None), str(obj.get("id") or uuid.uuid4().hex)

    def record(r: ExecResult) -> None:
        counts[r.status] += 1
        latency["sum"] += r.duration_s
        latency["count"] += 1

    async def exec_one(request):
        code, t, rid = parse_req(await body(request))
        r = await sb.arun(code, timeout_s=t)
        record(r)
        return web.json_response(dict(r.to_dict(), id=rid))

    async def batch(request):
        obj = await body(request)
        reqs = obj.get("requests")
        if not isinstance(reqs, list) or len(reqs) > max_batch:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"'requests' must be a list of at most {max_batch}"}),
                                     content_type="application/json")
        parsed = [parse_req(x if isinstance(x, dict) else {}) for x in reqs]
        results = await asyncio.gather(*(sb.arun(c, timeout_s=t) for c, t, _ in parsed))
        out = []
        for (_c, _t, rid), r in zip(parsed, results):
            record(r)
            out.append(dict(r.to_dict(), id=rid))
        return web.json_response({"results": out})

    def get_session(request):
        sid = request.match_info["sid"]
        if sid not in sessions:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no session {sid}"}), content_type="application/json")
        s, _ = sessions[sid]
        sessions[sid] = (s, time.monotonic())
        return s

    async def new_session(request):
        sid = uuid.uuid4().hex
        sessions[sid] = (sb.session(), time.monotonic())
        return web.json_response({"session": sid})

    async def session_exec(request):
        s = get_session(request)
        code, t, rid = parse_req(await body(request))
        r = await s.arun(code, timeout_s=t)
        record(r)
        return web.json_response(dict(r.to_dict(), id=rid))

    async def session_fork(request):
        s = get_session(request)
        child = await asyncio.get_running_loop().run_in_executor(None, s.fork)
        sid = uuid.uuid4().hex
        sessions[sid] = (child, time.monotonic())
        return web.json_response({"session": sid})

    async def session_close(request):
        s = get_session(request)
        sessions.pop(request.match_info["sid"], None)
        await asyncio.get_running_loop().run_in_executor(None, s.close)
        return web.json_response({"closed": True})

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
                await asyncio.sleep(min(30.0, session_ttl_s / 2))
                now = time.monotonic()
                for sid, (s, seen) in list(sessions.items()):
                    if now - seen > session_ttl_s:
                        sessions.pop(sid, None)
                        await asyncio.get_running_loop().run_in_executor(None, s.close)
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        for s, _ in sessions.values():
            s.close()
        sessions.clear()

    app = web.Application(middlewares=[auth], client_max_size=MAX_BODY)
    app.add_routes([web.get("/health", health), web.get("/metrics", metrics), web.post("/v1/exec", exec_one),
                    web.post("/v1/batch", batch), web.post("/v1/sessions", new_session),
                    web.post("/v1/sessions/{sid}/exec", session_exec), web.post("/v1/sessions/{sid}/fork", session_fork),
                    web.delete("/v1/sessions/{sid}", session_close)])
    app.cleanup_ctx.append(reaper)
    return app


def serve(sb, host: str = "127.0.0.1", port: int = 8080, token: str = "") -> None:
    """Serve until interrupted."""
    from aiohttp import web

    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        log.warning("serving the sandbox on %s without a token: anyone who can reach it can run code", host)
    web.run_app(make_app(sb, token=token), host=host, port=port, print=None)


# ------------------------------------------------------------------------------------------------ client


def _error(msg: str) -> ExecResult:
    return ExecResult(status="sandbox_error", stderr=msg)


class RemoteSandbox:
    """Client for `zerotir sandbox serve`, with the interface of `Sandbox` (run/arun/session/health/close).

    Requests carry ids (checked on the way back); at most `concurrency` are in flight; a stateless call that comes
    back `sandbox_error` (or cannot reach the server) is retried up to `retries` times. Session calls are never
    retried once sent (they change state).
    """

    def __init__(self, url: str, token: str = "", timeout_s: float = 5.0, concurrency: int = 64, retries: int = 2,
                 connect_timeout_s: float = 5.0):
        if not url:
            raise ValueError("RemoteSandbox needs a URL (sandbox.url), e.g. http://127.0.0.1:8080")
        # Several replicas may be given, comma-separated: stateless calls rotate over them, a session stays on one.
        self.urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()]
        self.url = self.urls[0]
        self._next = itertools.count()
        self.timeout_s, self.retries, self.concurrency = timeout_s, retries, concurrency
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._connect_timeout_s = connect_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="zerotir-sandbox-client", daemon=True)
        self._thread.start()
        self._closed = False
        self._http = None
        self._sem: asyncio.Semaphore | None = None

    # ---- plumbing ----
    def _submit(self, coro):
        if self._closed:
            coro.close()
            raise RuntimeError("sandbox client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _call(self, coro):
        return self._submit(coro).result()

    async def _acall(self, coro):
        return await asyncio.wrap_future(self._submit(coro))

    async def _session_http(self):
        if self._http is None:
            import aiohttp

            self._http = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout_s),
                connector=aiohttp.TCPConnector(limit=self.concurrency))
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._http

    def _pick(self) -> str:
        return self.urls[next(self._next) % len(self.urls)]

    async def _post(self, path: str, payload: dict | None, timeout: float, method: str = "POST",
                    base: str | None = None) -> dict:
        import aiohttp

        http = await self._session_http()
        async with self._sem:  # type: ignore[union-attr]
            async with http.request(method, (base or self._pick()) + path, json=payload,
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {text[:300]}")
                return json.loads(text)

    async def _exec(self, path: str, code: str, timeout_s: float | None, retry: bool,
                    base: str | None = None) -> ExecResult:
        t = timeout_s or self.timeout_s
        attempts = (self.retries + 1) if retry else 1
        last = _error("sandbox: no attempt made")
        for attempt in range(attempts):
            rid = uuid.uuid4().hex
            try:
                d = await self._post(path, {"code": code, "timeout_s": t, "id": rid}, timeout=t + 30.0, base=base)
                if d.get("id") != rid:
                    last = _error(f"sandbox: response id {d.get('id')!r} does not match request id {rid!r}")
                else:
                    last = ExecResult.from_dict(d)
            except Exception as e:  # noqa: BLE001 - network/server failure is infrastructure, never the code's
                last = _error(f"sandbox: remote call failed: {type(e).__name__}: {e}")
            if last.status != "sandbox_error":
                return last
            if attempt + 1 < attempts:
                await asyncio.sleep(0.1 * 2**attempt)
        return last

    # ---- the Sandbox interface ----
    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        try:
            return self._call(self._exec("/v1/exec", code, timeout_s, retry=True))
        except Exception as e:  # noqa: BLE001
            return _error(f"sandbox: {type(e).__name__}: {e}")

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult:
        try:
            return await self._acall(self._exec("/v1/exec", code, timeout_s, retry=True))
        except Exception as e:  # noqa: BLE001
            return _error(f"sandbox: {type(e).__name__}: {e}")

    def run_many(self, codes: list[str], timeout_s: float | None = None) -> list[ExecResult]:
        async def _all():
            return await asyncio.gather(*(self._exec("/v1/exec", c, timeout_s, retry=True) for c in codes))
        return self._call(_all())

    def session(self) -> "RemoteSession":
        return RemoteSession(self, None)

    def health(self) -> dict:
        async def _h():
            import aiohttp

            http = await self._session_http()
            out = []
            for u in self.urls:
                async with http.get(u + "/health", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    out.append(await resp.json())
            if len(out) == 1:
                return out[0]
            return {"ok": all(h.get("ok") for h in out), "replicas": out}
        try:
            return self._call(_h())
        except Exception as e:  # noqa: BLE001
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}

    def close(self) -> None:
        if self._closed:
            return

        async def _c():
            if self._http is not None:
                await self._http.close()
        try:
            self._call(_c())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> "RemoteSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RemoteSession:
    """A session on the service: same interface as `Session` (run/arun/fork/close)."""

    def __init__(self, client: RemoteSandbox, sid: str | None, base: str | None = None):
        self._c, self._sid, self._closed = client, sid, False
        self._base = base or client._pick()  # the replica holding this session
        self._open_lock: asyncio.Lock | None = None  # created on the client's loop

    async def _ensure(self) -> str:
        if self._sid is None:
            if self._open_lock is None:
                self._open_lock = asyncio.Lock()
            async with self._open_lock:  # concurrent first calls open one session, not several
                if self._sid is None:
                    d = await self._c._post("/v1/sessions", {}, timeout=30.0, base=self._base)
                    self._sid = d["session"]
        return self._sid

    async def _run(self, code: str, timeout_s: float | None) -> ExecResult:
        try:
            sid = await self._ensure()
        except Exception as e:  # noqa: BLE001
            return _error(f"sandbox: could not open a remote session: {type(e).__name__}: {e}")
        return await self._c._exec(f"/v1/sessions/{sid}/exec", code, timeout_s, retry=False, base=self._base)

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        if self._closed:
            return _error("sandbox: session is closed")
        try:
            return self._c._call(self._run(code, timeout_s))
        except Exception as e:  # noqa: BLE001
            return _error(f"sandbox: {type(e).__name__}: {e}")

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult:
        if self._closed:
            return _error("sandbox: session is closed")
        try:
            return await self._c._acall(self._run(code, timeout_s))
        except Exception as e:  # noqa: BLE001
            return _error(f"sandbox: {type(e).__name__}: {e}")

    def fork(self) -> "RemoteSession":
        async def _f():
            sid = await self._ensure()
            d = await self._c._post(f"/v1/sessions/{sid}/fork", {}, timeout=30.0, base=self._base)
            return d["session"]
        try:
            return RemoteSession(self._c, self._c._call(_f()), base=self._base)
        except Exception:  # noqa: BLE001 - a failed fork gives a fresh session (its first call will say so)
            return RemoteSession(self._c, None, base=self._base)

    def _claim_sid(self) -> str | None:
        """Mark the session closed (once); return the server-side id to delete, or None when there is none."""
        if self._closed:
            return None
        self._closed = True
        return None if self._sid is None or self._c._closed else self._sid

    def _delete(self, sid: str):
        return self._c._post(f"/v1/sessions/{sid}", None, timeout=30.0, method="DELETE", base=self._base)

    def close(self) -> None:
        sid = self._claim_sid()
        if sid is None:
            return
        try:
            self._c._call(self._delete(sid))
        except Exception:  # noqa: BLE001
            pass

    async def aclose(self) -> None:
        sid = self._claim_sid()
        if sid is None:
            return
        try:
            await self._c._acall(self._delete(sid))
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "RemoteSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
