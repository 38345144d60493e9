"""What the tamper-evident audit trail costs: appending a chained record (lock, hash, write, fsync), the chain's
hashing alone, and `gatematch audit verify` over what was written.

    python -m gatematch.benchmarks.audit_append [--records 2000] [--folder DIR]

DIR (default: a temporary folder in the current one) should be on the disk the service's audit file lives on:
the fsync dominates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from gatematch.service.audit import AuditLog, AuditRecord, chained, verify_log


def measure(folder: Path, records: int) -> dict[str, object]:
    path = folder / "audit.jsonl"
    log = AuditLog(path)
    appends = []
    try:
        for n in range(records):
            record = AuditRecord(
                "match", "cam-1", flight_id="GM101", decision="NO_MATCH", score=0.31, sequence=n
            )
            start = time.perf_counter()
            log.record(record)
            appends.append(time.perf_counter() - start)
    finally:
        log.close()
    start = time.perf_counter()
    for n in range(records):
        chained(record, n + 1, "0" * 64)
    hashing = (time.perf_counter() - start) / records
    start = time.perf_counter()
    report = verify_log(path)
    verify = time.perf_counter() - start
    return {
        "records": records,
        "bytes_per_record": round(path.stat().st_size / records),
        "append_ms_p50": round(float(np.percentile(appends, 50)) * 1000, 3),
        "append_ms_p99": round(float(np.percentile(appends, 99)) * 1000, 3),
        "chain_hash_ms": round(hashing * 1000, 4),
        "verify_ms": round(verify * 1000, 1),
        "chain_ok": report.ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--folder", type=Path, default=Path.cwd())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatematch-audit-", dir=args.folder) as tmp:
        print(json.dumps(measure(Path(tmp), args.records), indent=2))


if __name__ == "__main__":
    main()
