"""SandboxFusion's POST /run_code, answered by our sandbox.

Requests are shaped exactly as verl's `reward_score.sandbox_fusion.utils.call_sandbox_api` sends them (requests.post,
headers Content-Type/Accept JSON, a json.dumps'd body with all eight fields), and responses are read the way its
`_process_single_case` reads them (status, run_result.status / return_code / stdout / stderr / execution_time).
"""

import base64
import json

import pytest

from tests.sandbox.remote_server import served
from zerotir.sandbox import fusion
from zerotir.sandbox.server import make_app
from zerotir.types import ExecResult

requests = pytest.importorskip("requests")
pytestmark = pytest.mark.timeout(180)

RESPONSE_KEYS = {"status", "message", "compile_result", "run_result", "executor_pod_name", "files"}
RUN_RESULT_KEYS = {"status", "execution_time", "return_code", "stdout", "stderr"}


# ---------------------------------------------------------------------------------------------- pure functions


def test_parse_request_accepts_verls_body_and_rejects_bad_fields():
    body = {"compile_timeout": 10, "run_timeout": 3, "code": "print(1)", "stdin": None, "memory_limit_MB": 1024,
            "language": "python", "files": {}, "fetch_files": []}
    req = fusion.parse_request(body)
    assert (req.code, req.run_timeout, req.stdin, req.files) == ("print(1)", 3.0, None, {})
    assert fusion.parse_request({"code": "x", "language": "python"}).run_timeout == 10.0  # SandboxFusion's default
    for bad, field in [({"language": "python"}, "'code'"), ({"code": "x"}, "'language'"),
                       (dict(body, run_timeout=0), "run_timeout"), (dict(body, run_timeout=601), "run_timeout"),
                       (dict(body, run_timeout=True), "run_timeout"), (dict(body, stdin=5), "stdin"),
                       (dict(body, memory_limit_MB="1G"), "memory_limit_MB"),
                       (dict(body, files={"../x": "YQ=="}), "../x"), (dict(body, files={"/etc/x": "YQ=="}), "/etc/x"),
                       (dict(body, files={"a.txt": "not base64!"}), "a.txt")]:
        with pytest.raises(ValueError, match=field.replace("(", r"\(")):
            fusion.parse_request(bad)
    with pytest.raises(fusion.UnsupportedRequest, match="'cpp'.*supported: python"):
        fusion.parse_request(dict(body, language="cpp"))
    with pytest.raises(fusion.UnsupportedRequest, match="fetch_files"):
        fusion.parse_request(dict(body, fetch_files=["out.txt"]))


def test_response_maps_every_status():
    def rr(r):
        d = fusion.response(r)
        assert set(d) == RESPONSE_KEYS and set(d["run_result"]) == RUN_RESULT_KEYS
        return d["status"], d["run_result"]["status"], d["run_result"]["return_code"]

    assert rr(ExecResult("ok", stdout="2\n", exit_code=0, duration_s=0.01)) == ("Success", "Finished", 0)
    assert rr(ExecResult("error", stderr="Traceback", exit_code=1)) == ("Failed", "Finished", 1)
    assert rr(ExecResult("error", exit_code=3)) == ("Failed", "Finished", 3)
    assert rr(ExecResult("oom", exit_code=1)) == ("Failed", "Finished", 1)
    assert rr(ExecResult("killed", signal=9)) == ("Failed", "Finished", -9)  # as subprocess reports a signal
    assert rr(ExecResult("timeout", stdout="partial")) == ("Failed", "TimeLimitExceeded", None)
    d = fusion.response(ExecResult("sandbox_error", stderr="sandbox: worker died"))
    assert (d["status"], d["message"], d["run_result"]["status"]) == ("SandboxError", "sandbox: worker died", "Error")
    d = fusion.response(ExecResult("ok", stdout="hi\n", duration_s=0.0123456789))
    assert d["run_result"]["stdout"] == "hi\n" and d["run_result"]["execution_time"] == 0.012346
    assert d["message"] == "" and d["files"] == {} and d["compile_result"] is None


def test_program_is_the_code_itself_without_stdin_or_files():
    assert fusion.program(fusion.RunCodeRequest(code="print(1)")) == "print(1)"
    assert fusion.program(fusion.RunCodeRequest(code="print(1)", stdin="")) == "print(1)"
    wrapped = fusion.program(fusion.RunCodeRequest(code="print(input())", stdin="7\n"))
    assert "print(input())" in wrapped and wrapped != "print(input())"
    compile(wrapped, "<test>", "exec")  # valid Python


# ---------------------------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def url(sb):
    with served(make_app(sb, api="sandboxfusion")) as u:
        yield u + "/run_code"


def call_like_verl(url, code, stdin=None, run_timeout=10, language="python", headers=None):
    """verl's call_sandbox_api request, byte for byte in shape (its field order, its headers, data=json.dumps)."""
    payload = json.dumps({"compile_timeout": 10, "run_timeout": run_timeout, "code": code, "stdin": stdin,
                          "memory_limit_MB": 1024, "language": language, "files": {}, "fetch_files": []})
    h = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    resp = requests.post(url, headers=h, data=payload, timeout=10 + run_timeout + 10)
    resp.raise_for_status()
    return resp.json()


def verl_outcome(resp: dict, expected: str | None = None) -> str:
    """How verl's _process_single_case classifies a response (its branches, written out here)."""
    run = resp.get("run_result")
    if resp["status"] == "SandboxError":
        return "sandbox_error"
    if resp["status"] == "Failed":
        if run and run["status"] == "TimeLimitExceeded":
            return "timeout"
        if run and (run["status"] == "Error" or (run["status"] == "Finished" and run["return_code"] != 0)):
            return "runtime_error"
        return "unknown_failure"
    if resp["status"] == "Success" and run and run["status"] == "Finished":
        out = run["stdout"] if run["stdout"] is not None else ""
        return "success" if expected is None or out.rstrip("\n") == expected.rstrip("\n") else "wrong_answer"
    return "unexpected"


def test_verl_shaped_requests_parse_as_verl_parses_them(url):
    r = call_like_verl(url, "print(sum(range(10)))")
    assert set(r) == RESPONSE_KEYS and set(r["run_result"]) == RUN_RESULT_KEYS
    assert verl_outcome(r, "45") == "success" and r["run_result"]["return_code"] == 0
    assert isinstance(r["run_result"]["execution_time"], float)
    assert verl_outcome(call_like_verl(url, "print(44)"), "45") == "wrong_answer"
    r = call_like_verl(url, "raise ValueError('no')")
    assert verl_outcome(r) == "runtime_error" and "ValueError: no" in r["run_result"]["stderr"]
    r = call_like_verl(url, "print('started', flush=True)\nwhile True: pass", run_timeout=1)
    assert verl_outcome(r) == "timeout" and r["run_result"]["stdout"] == "started\n"


def test_stdin_reaches_every_way_of_reading_it(url):
    code = "import sys\na = input()\nb = sys.stdin.readline()\nprint(int(a) + int(b), sys.stdin.read().split())"
    r = call_like_verl(url, code, stdin="1\n2\nx y\n")
    assert verl_outcome(r, "3 ['x', 'y']") == "success", r
    code = "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))"
    assert verl_outcome(call_like_verl(url, code, stdin="1 2\n3\n"), "6") == "success"
    assert verl_outcome(call_like_verl(url, "print(open(0).read().upper())", stdin="abc"), "ABC") == "success"
    # line numbers in a traceback are the user's own, not shifted by the stdin preamble
    r = call_like_verl(url, "x = input()\n\nraise KeyError(x)", stdin="k")
    assert verl_outcome(r) == "runtime_error" and "line 3" in r["run_result"]["stderr"], r["run_result"]["stderr"]
    # the preamble leaves nothing in the code's namespace
    r = call_like_verl(url, "print(__name__, sorted(k for k in globals() if not k.startswith('__')))", stdin="s")
    assert verl_outcome(r, "__main__ []") == "success", r


def test_files_are_written_before_the_code_runs(url):
    payload = {"code": "print(open('data/in.txt').read())", "language": "python",
               "files": {"data/in.txt": base64.b64encode(b"hello file").decode(), "skipped.txt": None}}
    r = requests.post(url, json=payload, timeout=30).json()
    assert verl_outcome(r, "hello file") == "success", r


def test_other_languages_get_a_sandbox_error_naming_python(url):
    r = call_like_verl(url, "int main() { return 0; }", language="cpp")
    assert verl_outcome(r) == "sandbox_error"
    assert "cpp" in r["message"] and "supported: python" in r["message"]


def test_malformed_request_is_422_with_detail(url):
    resp = requests.post(url, json={"language": "python"}, timeout=10)
    assert resp.status_code == 422 and "code" in resp.json()["detail"]
    resp = requests.post(url, data="not json", headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 400 and "JSON" in resp.json()["detail"]


def test_sandboxfusion_only_server_has_no_zerotir_routes(url):
    base = url.rsplit("/", 1)[0]
    assert requests.post(base + "/v1/exec", json={"code": "print(1)"}, timeout=10).status_code == 404
    assert requests.get(base + "/v1/ping", timeout=10).json() == "pong"


def test_token_as_header_or_in_the_url(sb):
    with served(make_app(sb, token="s3cret")) as base:
        resp = requests.post(base + "/run_code", json={"code": "print(1)", "language": "python"}, timeout=10)
        assert resp.status_code == 401
        r = call_like_verl(base + "/run_code", "print(1)", headers={"Authorization": "Bearer s3cret"})
        assert verl_outcome(r, "1") == "success"
        # verl posts to a bare URL and cannot add headers: the token may ride in /run_code's URL instead
        assert verl_outcome(call_like_verl(base + "/run_code?token=s3cret", "print(2)"), "2") == "success"
        assert requests.post(base + "/run_code?token=wrong", json={"code": "1", "language": "python"},
                             timeout=10).status_code == 401
        # ... and only there: the zerotir API still wants the header
        assert requests.post(base + "/v1/exec?token=s3cret", json={"code": "1"}, timeout=10).status_code == 401
