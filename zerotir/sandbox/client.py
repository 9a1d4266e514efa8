"""HTTP client for `zerotir sandbox serve` (server.py), with the interface of the local `Sandbox` (protocol.py).

    from zerotir.sandbox.client import RemoteSandbox
    with RemoteSandbox("http://127.0.0.1:8080", token="...") as sb:      # several replicas: "http://a:8080,http://b:8080"
        sb.run("print(1+1)")

Every call returns an ExecResult, never raises (an unreachable or failing server is `sandbox_error`), except
`Session.fork()`, which raises `SandboxForkError` when the server cannot clone the session.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import uuid

from zerotir.sandbox.protocol import SandboxForkError
from zerotir.sandbox.server import CLIENT_HEADER
from zerotir.types import ExecResult


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
        # One id per client object: the server's per-client concurrency cap counts this client's calls together.
        self._headers = {CLIENT_HEADER: uuid.uuid4().hex, **({"Authorization": f"Bearer {token}"} if token else {})}
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
        if self._closed:
            raise SandboxForkError("cannot fork a closed session")
        try:
            return RemoteSession(self._c, self._c._call(_f()), base=self._base)
        except Exception as e:  # noqa: BLE001 - never hand back a fresh session in place of the clone
            raise SandboxForkError(f"sandbox: fork failed: {type(e).__name__}: {e}") from e

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
