"""Importing gatematch changes nothing global: every process-wide setting is made where a process starts."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, logging, pkgutil, signal, importlib
import cv2, faiss, matplotlib, onnxruntime

calls = []
for module, name in ((faiss, "omp_set_num_threads"), (cv2, "setNumThreads"),
                     (onnxruntime, "set_default_logger_severity"), (matplotlib, "use")):
    real = getattr(module, name)
    def spy(*args, _name=name, _real=real, **kwargs):
        calls.append(_name)
        return _real(*args, **kwargs)
    setattr(module, name, spy)

def state():
    return {
        "faiss_threads": faiss.omp_get_max_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "backend": matplotlib.rcParams["backend"],
        "root_handlers": len(logging.getLogger().handlers),
        "sigterm": str(signal.getsignal(signal.SIGTERM)),
        "sigint": str(signal.getsignal(signal.SIGINT)),
    }

before = state()
import gatematch
names = sorted(m.name for m in pkgutil.walk_packages(gatematch.__path__, "gatematch.")
               if not m.name.endswith("__main__"))
for name in names:
    importlib.import_module(name)
print(json.dumps({"before": before, "after": state(), "calls": calls, "modules": len(names)}))
"""


def test_importing_every_module_changes_no_global_state() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["modules"] > 40  # every module was imported, not a handful
    assert report["calls"] == []
    assert report["after"] == report["before"]


def test_configure_process_is_where_faiss_threads_are_set_and_a_server_caps_opencv() -> None:
    """One thread per search everywhere; one per image operation in a server, whose workers fill the cores
    (batch commands keep OpenCV's pool)."""
    probe = "import cv2, faiss; from gatematch import process; "
    probe += "faiss.omp_set_num_threads(4); cv2.setNumThreads(4); "  # as on a 4-core box
    probe += "process.configure_process(); print(faiss.omp_get_max_threads(), cv2.getNumThreads()); "
    probe += "process.configure_server_process(); print(faiss.omp_get_max_threads(), cv2.getNumThreads())"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["1 4", "1 1"]
