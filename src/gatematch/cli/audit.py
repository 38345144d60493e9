"""`gatematch audit verify [LOG]`: check the audit trail's hash chain (gatematch.service.audit).

LOG is an audit file (its rotated predecessors `LOG.000001`, ... are read first) or the PostgreSQL URL of the
store whose table gatematch_audit holds the records; by default the config's [audit] path. Exit code 0 when
the chain is whole, 1 when a record was altered, removed, inserted or moved (each is named with its file and
line, or row id, and its sequence number), 2 when the log cannot be read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gatematch.cli.options import print_json
from gatematch.service.audit import verify_log
from gatematch.service.config import load_config

EXIT_BROKEN = 1


def _verify(args: argparse.Namespace) -> int:
    location = args.log or load_config(args.config).audit.path
    report = verify_log(location)
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "source": report.source,
                "parts": list(report.parts),
                "records": report.records,
                "head_seq": report.head_seq,
                "head_hash": report.head_hash,
                "problems": [{"where": p.where, "seq": p.seq, "what": p.what} for p in report.problems],
            }
        )
    else:
        for problem in report.problems:
            print(problem)
        verdict = "intact" if report.ok else f"BROKEN ({len(report.problems)} problems)"
        print(
            f"audit chain {verdict}: {report.records} records in {', '.join(report.parts)}; "
            f"head seq {report.head_seq} sha256 {report.head_hash}"
        )
    return 0 if report.ok else EXIT_BROKEN


def register(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser("audit", help="check the audit trail")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="check the hash chain; names altered, removed or moved records"
    )
    verify.add_argument(
        "log", nargs="?", default=None, help="audit file or postgresql:// URL (default: config)"
    )
    verify.add_argument(
        "--config", type=Path, default=None, help="service config (default: $GATEMATCH_CONFIG or built-in)"
    )
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(handler=_verify)
