"""The audit trail is tamper-evident: every record is chained to the one before it by hash, and
`gatematch audit verify` names each record that was altered, removed, inserted or moved (file, line and
sequence number); rotation keeps the chain; the service and the command line write one chain; the PostgreSQL
table holds the same chain."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from gatematch.cli.main import main
from gatematch.service.audit import (
    GENESIS,
    AuditLog,
    AuditRecord,
    DatabaseAuditLog,
    record_hash,
    rotated_files,
    verify_log,
)
from support.cli import run_gatematch
from support.postgres import need_cluster


def write(path: Path, count: int, max_bytes: int = 1 << 30, client: str = "cam-1") -> None:
    log = AuditLog(path, max_bytes)
    for n in range(count):
        log.record(AuditRecord("match", client, flight_id="GM101", decision="NO_MATCH", sequence=n))
    log.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def rewrite(path: Path, new: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in new))


def verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["audit", "verify", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_records_are_chained_across_reopenings(tmp_path: Path, capsys) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 3)
    write(path, 2)  # a restarted service continues the chain
    entries = [json.loads(line) for line in lines(path)]
    assert [e["chain_seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["chain_prev"] == GENESIS
    assert all(b["chain_prev"] == a["chain_hash"] for a, b in itertools.pairwise(entries))
    assert all(record_hash(e) == e["chain_hash"] for e in entries)
    code, out = verify(capsys, str(path))
    assert code == 0 and out[-1].startswith("audit chain intact: 5 records in audit.jsonl; head seq 5")


def altered(line: str, **changes: object) -> str:
    entry = json.loads(line)
    entry.update(changes)
    return json.dumps(entry, separators=(",", ":"))


def rehashed(line: str, **changes: object) -> str:
    entry = json.loads(altered(line, **changes))
    entry["chain_hash"] = record_hash(entry)
    return json.dumps(entry, separators=(",", ":"))


TAMPERING = {
    # what is done to the 10-record file -> (line, seq, what verify must say), in order
    "altered decision": (
        lambda r: [*r[:4], altered(r[4], decision="MATCH", traveler_id="T0007"), *r[5:]],
        [("line 5", 5, "altered: its content does not match its hash")],
    ),
    "altered and rehashed": (
        lambda r: [*r[:4], rehashed(r[4], decision="MATCH"), *r[5:]],
        [("line 6", 6, "does not follow seq 5 (audit.jsonl line 5): that record was altered or replaced")],
    ),
    "removed": (lambda r: [*r[:6], *r[7:]], [("line 7", 8, "1 record(s) missing before it (seq 7)")]),
    "last three removed from the middle": (
        lambda r: [*r[:2], *r[5:]],
        [("line 3", 6, "3 record(s) missing before it (seq 3..5)")],
    ),
    "reordered": (
        lambda r: [*r[:3], r[4], r[3], *r[5:]],
        [
            ("line 4", 5, "out of order: seq 5 comes before seq 4, stored later"),
            ("line 5", 4, "out of order: seq 4 comes after seq 5 (audit.jsonl line 4)"),
        ],
    ),
    "inserted": (
        lambda r: [*r[:2], json.dumps({"event": "match", "client": "forger"}), *r[2:]],
        [("line 3", None, "not a chained audit record (inserted?)")],
    ),
    "garbled": (
        lambda r: [*r[:8], r[8][:40], r[9]],
        [
            ("line 9", None, "not a JSON audit record (altered or cut)"),
            ("line 10", 10, "1 record(s) missing before it (seq 9)"),
        ],
    ),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_verify_pinpoints_tampering(tmp_path: Path, capsys, tampering: str) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 10)
    change, expected = TAMPERING[tampering]
    rewrite(path, change(lines(path)))
    code, out = verify(capsys, str(path))
    assert code == 1
    wanted = [f"audit.jsonl {where}{f' (seq {seq})' if seq else ''}: {what}" for where, seq, what in expected]
    assert out[:-1] == wanted
    assert out[-1].startswith(f"audit chain BROKEN ({len(expected)} problems)")


def test_verify_as_an_operator_runs_it_exit_codes(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 4)
    assert run_gatematch("audit", "verify", str(path)).returncode == 0
    rewrite(
        path, [altered(line, client="someone-else") if n == 1 else line for n, line in enumerate(lines(path))]
    )
    done = run_gatematch("audit", "verify", str(path), "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["problems"] == [
        {"where": "audit.jsonl line 2", "seq": 2, "what": report["problems"][0]["what"]}
    ]
    missing = run_gatematch("audit", "verify", str(tmp_path / "nothing.jsonl"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no audit log" in missing.stderr


def test_rotation_keeps_the_chain_and_verify_follows_the_files(tmp_path: Path, capsys) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 25, max_bytes=1500)  # about four records per file
    rotated = rotated_files(path)
    assert len(rotated) >= 4 and [p.name for p in rotated][:2] == ["audit.jsonl.000001", "audit.jsonl.000002"]
    first_of_second = json.loads(lines(rotated[1])[0])
    assert first_of_second["chain_prev"] == json.loads(lines(rotated[0])[-1])["chain_hash"]
    code, out = verify(capsys, str(path))
    assert code == 0 and f"25 records in {rotated[0].name}" in out[-1]

    removed = lines(rotated[2])
    rotated[2].unlink()  # a whole rotated file removed
    code, out = verify(capsys, str(path))
    first_after = json.loads(lines(rotated[3])[0])["chain_seq"]
    assert code == 1
    assert out[0] == (
        f"{rotated[3].name} line 1 (seq {first_after}): {len(removed)} record(s) missing before it "
        f"(seq {first_after - len(removed)}..{first_after - 1})"
    )


WRITER = """
import sys
from gatematch.service.audit import AuditLog, AuditRecord
log = AuditLog(sys.argv[1], int(sys.argv[3]))
for n in range(int(sys.argv[2])):
    log.record(AuditRecord("gallery.list", sys.argv[4], sequence=n))
log.close()
"""


def test_the_service_and_commands_in_other_processes_write_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writers = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(path), "60", "4000", f"p{n}"])
        for n in range(3)
    ]
    write(path, 60, max_bytes=4000, client="in-process")
    for writer in writers:
        assert writer.wait(60) == 0
    report = verify_log(path)
    assert report.ok, [str(p) for p in report.problems]
    assert report.records == 240 and report.head_seq == 240 and len(report.parts) > 2


def test_the_database_sink_holds_the_same_chain(postgres_cluster, tmp_path: Path, capsys) -> None:
    url = need_cluster(postgres_cluster).database()
    sink = DatabaseAuditLog(url, AuditLog(tmp_path / "fallback.jsonl"))
    for n in range(5):
        sink.record(
            AuditRecord("encounter", "cam-1", camera_id="cam-1", gate_id="A1", score=0.25 + n, encounter_id=n)
        )
    sink.close()
    code, out = verify(capsys, url)
    assert code == 0 and "5 records in gatematch_audit" in out[-1]
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE gatematch_audit SET decision = 'MATCH' WHERE chain_seq = 3")
        conn.execute(  # a forged row: INSERT is the one thing the table allows
            "INSERT INTO gatematch_audit (at, event, client, flight_id, gallery_version, camera_id, gate_id,"
            " decision, traveler_id, detail, chain_seq, chain_prev, chain_hash)"
            " VALUES (now(), 'match', 'forger', '', '', '', '', 'MATCH', 'T1', '', 6, 'x', 'y')"
        )
    code, out = verify(capsys, url)
    assert code == 1 and out[0].endswith("(seq 6): altered: its content does not match its hash")
