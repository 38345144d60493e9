"""The server's log is one JSON object per line, whatever writes to stderr: C libraries (libpng, libjpeg, OpenCV,
gRPC core) included. Issue 10: under corrupt images they wrote thousands of plain-text lines into the JSON log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import cv2
import grpc
import numpy as np

from gatematch.client import load_requests, make_frame, open_channel
from gatematch.service.server import GateMatchServer
from gatematch.v1 import gallery_pb2_grpc, match_pb2, match_pb2_grpc
from support.data import REPO
from support.jpegs import cut_and_terminate, progressive_bomb
from support.server import health_status, service_config

FLIGHT = "GM420"
START_S = 120.0


def records(lines: list[str]) -> list[dict]:
    """Every line parsed as JSON; the assertion names the first line that is not a JSON object."""
    parsed = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        assert isinstance(record, dict), f"not a JSON object: {line!r}"
        parsed.append(record)
    return parsed


def test_native_writes_to_stderr_become_json_records() -> None:
    probe = (
        "import logging, os, sys, threading\n"
        "from gatematch.service.server import configure_logging\n"
        "configure_logging()\n"
        "logging.getLogger('gatematch.test').info('from python', extra={'n': 1})\n"
        "os.write(2, b'libfoo warning: written by C code\\nsecond line\\n')\n"
        "failing = threading.Thread(target=lambda: 1 / 0)\n"  # an uncaught exception's traceback
        "failing.start()\n"
        "failing.join()\n"
        "os.write(2, b'no newline at exit')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    logged = records(done.stderr.splitlines())
    messages = [r["message"] for r in logged]
    assert messages[0] == "from python" and logged[0]["n"] == 1
    native = [r for r in logged if r["logger"] == "gatematch.native"]
    assert [r["message"] for r in native[:2]] == ["libfoo warning: written by C code", "second line"]
    assert any("ZeroDivisionError" in m for m in messages)
    assert messages[-1] == "no newline at exit"


def _corrupt_images(photo: bytes) -> list[bytes]:
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    png = cv2.imencode(".png", image)[1].tobytes()
    zeroed = bytearray(png)
    zeroed[200:400] = bytes(200)
    flipped = bytearray(png)
    flipped[60] ^= 1
    webp = cv2.imencode(".webp", image)[1].tobytes()
    return [
        bytes(zeroed),  # libpng: "IDAT: invalid ..."
        bytes(flipped),  # libpng: "IDAT: CRC error"
        png[: len(png) // 2] + png[-12:],  # libpng: "PNG input buffer is incomplete"
        webp[: len(webp) // 2],
        cut_and_terminate(photo, 0.6),  # libjpeg: "premature end of data segment"
        photo[:2000] + bytes(5000) + photo[7000:],
        progressive_bomb(640, 480)[0],
    ]


def test_a_server_fed_corrupt_images_writes_only_json_lines_to_stderr(tmp_path, model_dir, examples) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(
        "[server]\nport = 0\nworkers = 1\nshutdown_grace_s = 1.0\n"
        f'[store]\ngallery_dir = "{tmp_path / "galleries"}"\nmodel_dir = "{model_dir}"\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gatematch.cli", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stderr), daemon=True)
    reader.start()
    try:
        port = None
        deadline = time.monotonic() + START_S
        while port is None and time.monotonic() < deadline and server.poll() is None:
            port = next((r["port"] for r in records(list(lines)) if r["message"] == "listening"), None)
            time.sleep(0.1)
        assert port, lines
        target = f"127.0.0.1:{port}"
        while health_status(target) != 1 and time.monotonic() < deadline:  # 1 = SERVING
            time.sleep(0.2)
        enrolled = (examples / "obama" / "obama.jpg").read_bytes()
        photo = (examples / "obama" / "obama2.jpg").read_bytes()
        with open_channel(target) as channel:
            gallery_pb2_grpc.GalleryServiceStub(channel).Load(
                load_requests(FLIGHT, datetime.now(UTC) + timedelta(hours=2), [("obama", enrolled)]),
                timeout=120,
            )
            stub = match_pb2_grpc.MatchServiceStub(channel)
            for round_ in range(3):
                for i, image in enumerate(_corrupt_images(photo)):
                    frame = make_frame("cam-1", "A1", FLIGHT, 10 * round_ + i, image)
                    try:
                        stub.Match(match_pb2.MatchRequest(frame=frame), timeout=30)
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
            good = stub.Match(match_pb2.MatchRequest(frame=make_frame("cam-1", "A1", FLIGHT, 99, photo)))
            assert good.decision == match_pb2.DECISION_MATCH
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        reader.join(10)
    logged = records(lines)
    assert server.returncode == 0
    assert logged[-1]["message"] == "stopped"
    native = [r["message"] for r in logged if r["logger"] == "gatematch.native"]
    assert any("libpng" in m for m in native), native  # captured, not lost


def test_a_server_that_cannot_start_says_why_in_one_json_error_record(tmp_path) -> None:
    """A bad setting or a policy file that is not there: exit code 2 and one ERROR record naming the problem
    (before, the CLI's plain message went through the native-stderr capture and came out as a WARNING of
    `gatematch.native`)."""
    policy = tmp_path / "missing-policy.toml"
    for text, expected in [
        ("[server]\nbogus = 1\n", "unknown setting [server] bogus"),
        (f'[auth]\npolicy_file = "{policy}"\n', str(policy)),
    ]:
        config = tmp_path / "serve.toml"
        config.write_text(text)
        done = subprocess.run(
            [sys.executable, "-m", "gatematch.cli", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        logged = records(done.stderr.splitlines())
        errors = [r for r in logged if r["level"] == "ERROR"]
        assert len(errors) == 1 and expected in errors[0]["error"], logged
        assert errors[0]["message"] == "the service cannot start"
        assert not any(r["logger"] == "gatematch.native" for r in logged), logged


def test_a_started_server_runs_opencv_in_the_calling_thread(tmp_path) -> None:
    """The workers fill the cores: OpenCV's own pool would only add waiting threads (process.py)."""
    cv2.setNumThreads(4)  # as on a 4-core box, whatever ran before in this process
    server = GateMatchServer(service_config(tmp_path))
    try:
        server.start()
        assert cv2.getNumThreads() == 1
    finally:
        server.stop(0.0)
