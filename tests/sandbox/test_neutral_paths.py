"""Nothing the code can look at names the host's layout: mountinfo, sys.path, sys.prefix, the environment, listings
of / and of every mount point's parents, module files and tracebacks show only neutral paths, and imports work."""

import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.sandbox.conftest import full_isolation_available, full_kwargs
from zerotir.sandbox.isolation import NEUTRAL_ROOT, python_layout

pytestmark = pytest.mark.timeout(180)

PROBE = r"""
import json, os, sys, traceback
info = {"mountinfo": open('/proc/self/mountinfo').read(), "cgroup": open('/proc/self/cgroup').read(),
        "sys.path": sys.path, "prefixes": [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.executable],
        "root": os.listdir('/'), "env": dict(os.environ), "cwd": os.getcwd()}
listed = {}
for line in info["mountinfo"].splitlines():
    p = line.split()[4]
    while p != '/':
        p = os.path.dirname(p)
        try:
            listed[p] = os.listdir(p)
        except OSError as e:
            listed[p] = str(e)
info["listed"] = listed
import numpy, sympy
info["files"] = [numpy.__file__, sympy.__file__, os.__file__, json.__file__]
try:
    sympy.sympify('(1 +')
except Exception:
    info["traceback"] = traceback.format_exc()
import subprocess
info["subprocess"] = subprocess.run(["python3", "-c", "import sympy, sys; print(sys.prefix)"], capture_output=True,
                                    text=True).stdout
print(json.dumps(info))
"""


def _host_paths() -> set[str]:
    here = Path(__file__).resolve()
    paths = {str(here.parents[2]), sys.prefix, sys.base_prefix, sys.executable, str(Path.home()), os.getcwd()}
    return {p for p in paths | {str(Path(p).resolve()) for p in paths} if p not in ("/", "/usr", "/usr/local")}


def _leaks(text: str, host: set[str]) -> list[str]:
    tokens = re.split(r"[\s'\",:;=\[\]{}()]+", text)
    hits = [t for t in tokens for h in host if t == h or t.startswith(h + "/")]
    return sorted(set(hits + [w for w in (".pyenv", ".venv", "site-packages/zerotir") if w in text]))


def test_python_layout_maps_every_prefix_and_drops_the_rest():
    lay = python_layout(["/root/.pyenv/versions/3.11.7", "/work/main/.venv"], "/root/.pyenv/versions/3.11.7/bin/py",
                        ["", "/root/.pyenv/versions/3.11.7/lib/python3.11", "/work/main/.venv/lib/site-packages",
                         "/work/main", "/usr/lib/python3/dist-packages",
                         "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages"])
    assert lay.binds == (("/root/.pyenv/versions/3.11.7", f"{NEUTRAL_ROOT}/p0"), ("/work/main/.venv",
                                                                                   f"{NEUTRAL_ROOT}/p1"))
    assert lay.python == f"{NEUTRAL_ROOT}/p0/bin/py"
    assert lay.sys_path == (f"{NEUTRAL_ROOT}/p0/lib/python3.11", f"{NEUTRAL_ROOT}/p1/lib/site-packages",
                            "/usr/lib/python3/dist-packages", f"{NEUTRAL_ROOT}/p0/lib/python3.11/site-packages")
    assert lay.site_path == (f"{NEUTRAL_ROOT}/p1/lib/site-packages", "/usr/lib/python3/dist-packages")
    assert lay.lib_path == f"{NEUTRAL_ROOT}/p0/lib"
    # A system interpreter needs no bind; a venv nested in a prefix shares its bind.
    sys_lay = python_layout(["/usr", "/usr/local/venv"], "/usr/bin/python3", ["/usr/lib/python3.11"])
    assert sys_lay.binds == () and sys_lay.python == "/usr/bin/python3"


@pytest.mark.skipif(not full_isolation_available(), reason="isolation='full' needs bubblewrap and root")
def test_no_host_path_is_visible_inside():
    from zerotir.sandbox import Sandbox

    with Sandbox(workers=1, spares=0, timeout_s=20.0, max_output_bytes=1 << 20, **full_kwargs()) as box:
        r = box.run(PROBE)
    assert r.status == "ok", r
    info = json.loads(r.stdout)
    assert all(p.startswith(NEUTRAL_ROOT) or p.startswith("/usr") for p in info["prefixes"]), info["prefixes"]
    assert "Traceback" in info["traceback"] and "sympy" in info["traceback"]
    assert info["subprocess"].strip() == info["prefixes"][1]  # a subprocess python finds the same packages
    assert info["listed"][NEUTRAL_ROOT] and all(n.startswith("p") for n in info["listed"][NEUTRAL_ROOT])
    host = _host_paths()
    leaks = {k: _leaks(json.dumps(v), host) for k, v in info.items()}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}
