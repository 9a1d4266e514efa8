"""SandboxFusion's `POST /run_code` schema, answered by our sandbox (pure functions; the route is in server.py).

RL stacks that talk to SandboxFusion (verl's sandbox tool and `reward_score.sandbox_fusion`, ToRL, SimpleTIR) post

    {"code": str, "language": "python", "run_timeout": 10, "compile_timeout": 10, "stdin": str | null,
     "memory_limit_MB": -1, "files": {path: base64 | null}, "fetch_files": [path, ...]}

and read back

    {"status": "Success" | "Failed" | "SandboxError", "message": str,
     "compile_result": null, "run_result": {"status": "Finished" | "TimeLimitExceeded" | "Error",
     "execution_time": s, "return_code": int | null, "stdout": str, "stderr": str},
     "executor_pod_name": null, "files": {}}

(schema read from SandboxFusion's sandbox/server/sandbox_api.py and sandbox/runners/types.py, and from what verl's
`call_sandbox_api` sends and its `_process_single_case` reads). What differs, on purpose:
  * Only `language="python"` runs; any other language gets status "SandboxError" with a message naming what is
    supported (SandboxFusion itself would answer 422 for an unknown language and run the others).
  * `memory_limit_MB` is accepted and ignored: the server's own `--memory-mb` (and quotas) apply to every call.
  * `compile_timeout` is accepted and ignored (Python has no compile step; `compile_result` stays null, as there).
  * `fetch_files` must be empty (the sandbox's files vanish with the call); `files` are written, relative to the
    working directory, before the code runs.
  * Malformed requests (no `code`, wrong types) get HTTP 422 with {"detail": "..."}, as FastAPI does.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from zerotir.types import ExecResult

SUPPORTED_LANGUAGES = ("python",)


class UnsupportedRequest(ValueError):
    """A well-formed request we do not run (another language, fetch_files): answered as a SandboxError, HTTP 200."""


@dataclass(frozen=True)
class RunCodeRequest:
    """The fields of SandboxFusion's RunCodeRequest that change what runs."""

    code: str
    """The program, run as __main__."""
    run_timeout: float = 10.0
    """Wall-clock limit in seconds (SandboxFusion's default is 10)."""
    stdin: str | None = None
    """Text on standard input (input(), sys.stdin, sys.stdin.buffer, open(0) all read it)."""
    files: dict[str, bytes] = field(default_factory=dict)
    """Files written before the code runs, relative to its working directory."""


def parse_request(obj: dict, max_timeout_s: float = 600.0) -> RunCodeRequest:
    """Validate a /run_code body. Raises ValueError (-> 422) for a malformed one, UnsupportedRequest for one we
    understand but do not run."""
    code = obj.get("code")
    if not isinstance(code, str):
        raise ValueError("field 'code' is required and must be a string")
    lang = obj.get("language")
    if not isinstance(lang, str):
        raise ValueError("field 'language' is required and must be a string, e.g. \"python\"")
    if lang not in SUPPORTED_LANGUAGES:
        raise UnsupportedRequest(f"language {lang!r} is not supported by this sandbox (zerotir); supported: "
                                 f"{', '.join(SUPPORTED_LANGUAGES)}")
    t = obj.get("run_timeout", 10.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= max_timeout_s:
        raise ValueError(f"field 'run_timeout' must be a number in (0, {max_timeout_s:g}] seconds, got {t!r}")
    for name in ("compile_timeout", "memory_limit_MB"):  # accepted for compatibility, checked for type only
        v = obj.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"field {name!r} must be a number, got {v!r}")
    stdin = obj.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise ValueError("field 'stdin' must be a string or null")
    fetch = obj.get("fetch_files") or []
    if not isinstance(fetch, list):
        raise ValueError("field 'fetch_files' must be a list of paths")
    if fetch:
        raise UnsupportedRequest("fetch_files is not supported by this sandbox (zerotir): files vanish with the call; "
                                 "print what you need instead")
    return RunCodeRequest(code=code, run_timeout=float(t), stdin=stdin, files=_decode_files(obj.get("files") or {}))


def _decode_files(files) -> dict[str, bytes]:
    if not isinstance(files, dict):
        raise ValueError("field 'files' must be an object {relative path: base64 content}")
    out = {}
    for path, content in files.items():
        if content is None:  # SandboxFusion skips null entries
            continue
        parts = path.replace("\\", "/").split("/")
        if not path or path.startswith("/") or ".." in parts:
            raise ValueError(f"files: path {path!r} must be relative and stay inside the working directory")
        if not isinstance(content, str):
            raise ValueError(f"files[{path!r}] must be a base64 string")
        try:
            out[path] = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"files[{path!r}] is not valid base64") from None
    return out


def program(req: RunCodeRequest) -> str:
    """The source the sandbox runs: the code itself, or, when there is stdin or files, one line that provides them
    (in a namespace of its own, so nothing is left in the code's globals) and then runs the code compiled on its
    own, so its line numbers are its own (a traceback shows one extra frame, `<cell>` line 1)."""
    if not req.stdin and not req.files:
        return req.code
    prep = {"stdin": (req.stdin or "").encode(), "files": req.files}
    return (f"exec(compile({_PREPARE!r}, '<zerotir-prepare>', 'exec'), {prep!r}); "
            f"exec(compile({req.code!r}, '<cell>', 'exec'))\n")


# Stdin goes to a real fd 0, so input(), sys.stdin(.buffer), open(0) and os.read(0, n) all see it.
_PREPARE = """import io, os, sys, tempfile
for path, data in files.items():
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
if stdin:
    f = tempfile.TemporaryFile()
    f.write(stdin)
    f.seek(0)
    os.dup2(f.fileno(), 0)
    f.close()
    sys.stdin = io.TextIOWrapper(io.FileIO(0, 'r', closefd=False), encoding='utf-8')
"""


def response(r: ExecResult) -> dict:
    """An ExecResult as SandboxFusion's RunCodeResponse (what verl's `_process_single_case` parses)."""
    if r.status == "sandbox_error":
        return sandbox_error(r.stderr or "sandbox infrastructure failure",
                             run_result=_run_result("Error", r, None))
    if r.status == "timeout":
        return _resp("Failed", _run_result("TimeLimitExceeded", r, None))
    if r.status == "ok":
        return _resp("Success", _run_result("Finished", r, 0 if r.exit_code is None else r.exit_code))
    # error / oom / killed: the program ran and failed; a signal is a negative return code, as with subprocess
    if r.signal:
        code = -r.signal
    else:
        code = r.exit_code if r.exit_code else 1
    return _resp("Failed", _run_result("Finished", r, code))


def sandbox_error(message: str, run_result: dict | None = None) -> dict:
    """The answer for a request this sandbox cannot serve (unsupported language, infrastructure failure)."""
    return dict(_resp("SandboxError", run_result), message=message)


def _run_result(status: str, r: ExecResult, return_code: int | None) -> dict:
    return {"status": status, "execution_time": round(r.duration_s, 6), "return_code": return_code,
            "stdout": r.stdout, "stderr": r.stderr}


def _resp(status: str, run_result: dict | None) -> dict:
    return {"status": status, "message": "", "compile_result": None, "run_result": run_result,
            "executor_pod_name": None, "files": {}}
