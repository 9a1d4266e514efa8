"""Nothing the code can look at names the host's layout: mountinfo, sys.path, sys.prefix, the environment, listings
of / and of every mount point's parents, module files and tracebacks show only neutral paths, and imports work."""

import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.sandbox.conftest import full_isolation_available, full_kwargs
from zerotir.sandbox.isolation import NEUTRAL_ROOT, python_layout, revealing_files

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
info["package_dir_texts"] = {}
for d in sys.path:
    if d.startswith('/opt/'):
        for n in os.listdir(d):
            if n.endswith('.pth') or n.startswith('__editable__') or n == 'pyvenv.cfg':
                info["package_dir_texts"][n] = open(os.path.join(d, n)).read()
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
    base, venv = "/root/.pyenv/versions/3.11.7", "/work/main/.venv"
    lay = python_layout([base, venv], f"{base}/bin/py",
                        [f"{base}/lib/python3.11", f"{venv}/lib/site-packages", "/work/main",
                         "/usr/lib/python3/dist-packages", f"{base}/lib/python3.11/site-packages"])
    # The base prefix whole; of the venv only its package directory; the editable checkout not at all.
    assert lay.binds == ((base, f"{NEUTRAL_ROOT}/p0"), (f"{venv}/lib/site-packages", f"{NEUTRAL_ROOT}/p1"))
    assert lay.python == f"{NEUTRAL_ROOT}/p0/bin/py"
    assert lay.sys_path == (f"{NEUTRAL_ROOT}/p0/lib/python3.11", f"{NEUTRAL_ROOT}/p1",
                            "/usr/lib/python3/dist-packages", f"{NEUTRAL_ROOT}/p0/lib/python3.11/site-packages")
    assert lay.site_path == (f"{NEUTRAL_ROOT}/p1", "/usr/lib/python3/dist-packages")
    assert lay.lib_path == f"{NEUTRAL_ROOT}/p0/lib"
    assert lay.neutral("/work/main/zerotir") is None
    # A system interpreter needs no bind.
    sys_lay = python_layout(["/usr"], "/usr/bin/python3", ["/usr/lib/python3.11"])
    assert sys_lay.binds == () and sys_lay.python == "/usr/bin/python3"


def test_files_naming_host_paths_are_found(tmp_path):
    for name in ("a.pth", "__editable___x_finder.py", "six.py", "x-1.0.dist-info/direct_url.json",
                 "y-1.0.dist-info/METADATA"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("/work/main")
    assert revealing_files(str(tmp_path)) == ["__editable___x_finder.py", "a.pth", "x-1.0.dist-info/direct_url.json"]


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
