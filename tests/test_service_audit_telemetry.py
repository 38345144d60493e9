"""Audit log (append-only JSON lines, no room for images or templates) and Prometheus metrics."""

from __future__ import annotations

import ast
import json
import re
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import gatematch
from gatematch.service.audit import EVENTS, MAX_TEXT, AuditLog, AuditRecord
from gatematch.service.telemetry import Telemetry


def test_records_are_appended_as_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    log = AuditLog(path)
    log.record(
        AuditRecord(
            "encounter", "cam-a12-1", flight_id="BA117", decision="MATCH", traveler_id="t7", score=0.61
        )
    )
    log.close()
    log = AuditLog(path)  # reopening appends, never truncates
    log.record(AuditRecord("gallery.delete", "ops-admin", flight_id="BA117", detail="departed"))
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["event"], r["client"]) for r in lines] == [
        ("encounter", "cam-a12-1"),
        ("gallery.delete", "ops-admin"),
    ]
    assert lines[0]["score"] == pytest.approx(0.61) and lines[0]["at"].endswith("+00:00")


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")

    def write(worker: int) -> None:
        for i in range(50):
            log.record(AuditRecord("match", f"cam-{worker}", sequence=i, detail="x" * MAX_TEXT))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(records) == 200
    assert sorted((r["client"], r["sequence"]) for r in records) == sorted(
        (f"cam-{w}", i) for w in range(4) for i in range(50)
    )


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("detail", b"\xff\xd8\xff\xe0 jpeg bytes", TypeError),
        ("detail", bytearray(16), TypeError),
        ("traveler_id", np.zeros(128, np.float32), TypeError),
        ("score", np.float32(0.5), TypeError),
        ("score", np.zeros(128, np.float32), TypeError),
        ("sequence", True, TypeError),
        ("detail", "A" * (MAX_TEXT + 1), ValueError),  # e.g. a base64 image or template
    ],
)
def test_images_and_templates_cannot_enter_a_record(field: str, value: object, error: type) -> None:
    with pytest.raises(error, match=field):
        AuditRecord("match", "cam", **{field: value})


# Dotted event names ("gallery.add") may reach AuditRecord through a variable; any literal of that shape counts.
EVENT_SHAPE = re.compile(rf"(?:{'|'.join(sorted({e.split('.')[0] for e in EVENTS if '.' in e}))})\.[a-z_]+")


def recorded_events(source: str) -> set[str]:
    """Event names a module's code can record: the literal first argument of `AuditRecord(...)` or an
    admin's `.record(...)`, and every string shaped like a dotted event name."""
    events = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and EVENT_SHAPE.fullmatch(node.value)
        ):
            events.add(node.value)
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in ("AuditRecord", "record") and isinstance(node.args[0].value, str):
                events.add(node.args[0].value)
    return events


def test_every_event_the_code_records_is_a_known_event() -> None:
    """AuditRecord refuses an unknown event at run time, i.e. an action would fail where it should be
    recorded; this finds such a name in the source before any run reaches it."""
    assert recorded_events('AuditRecord("gallery.copy", "x")\nadmin.record("copy")\n') == {
        "gallery.copy",
        "copy",
    }
    root = Path(gatematch.__file__).parent
    used: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if path == root / "service" / "audit.py":  # where EVENTS is defined: not a use
            continue
        for event in recorded_events(path.read_text(encoding="utf-8")):
            used.setdefault(event, str(path.relative_to(root)))
    newer = {"verify", "gallery.add", "gallery.remove", "gate.assign", "gate.release", "gate.list"}
    assert newer <= set(used)
    unknown = {event: where for event, where in used.items() if event not in EVENTS}
    assert not unknown, f"audit events not in gatematch.service.audit.EVENTS: {unknown}"
    with pytest.raises(ValueError, match=r"audit event 'gallery\.copy' is not one of"):
        AuditRecord("gallery.copy", "x")


def test_metrics_are_scraped_over_http() -> None:
    metrics = Telemetry()
    metrics.observe_stages({"detect": 0.012, "embed": 0.004})
    metrics.decisions.labels("encounter", "MATCH").inc()
    metrics.dropped_frames.inc(3)
    metrics.queue_depth.set(2)
    port = metrics.serve("127.0.0.1", 0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert 'gatematch_stage_seconds_count{stage="detect"} 1.0' in text
    assert 'gatematch_decisions_total{decision="MATCH",kind="encounter"} 1.0' in text
    assert "gatematch_dropped_frames_total 3.0" in text
    assert "gatematch_queue_depth 2.0" in text
    assert (
        Telemetry().exposition().count(b"gatematch_dropped_frames_total 0.0") == 1
    )  # registries are separate
