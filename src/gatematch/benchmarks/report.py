"""Benchmark reports: report.json (machine-readable), report.md (tables for people) and PNG plots.

The JSON is the record: it names the data set by fingerprint, every model by sha256, the seed and the command,
so a figure quoted anywhere can be traced and reproduced. Markdown and plots are derived from the same data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gatematch.atomicfile import write_atomic
from gatematch.benchmarks import metrics
from gatematch.benchmarks.accuracy import CONVENTIONS, AccuracySettings, PackRun
from gatematch.benchmarks.dataset import Dataset

ACCURACY_FORMAT = "gatematch-accuracy-report/1"
LATENCY_FORMAT = "gatematch-latency-report/1"
DET_POINTS = 400  # points per curve: a DET of millions of impostor scores needs no more to be drawn


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Path, data: object) -> None:
    """Atomic: a reader (or a rerun) never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o644)  # reports are for reading


def percent(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


# ------------------------------------------------------------------------------------------------ accuracy


def accuracy_report(
    dataset: Dataset,
    settings: AccuracySettings,
    runs: Sequence[PackRun],
    *,
    command: str,
    flip: bool,
    calibration_files: dict[str, str],
    pairs_file: str | None,
    labels_file: str | None,
) -> dict[str, object]:
    packs = {}
    for run in runs:
        packs[run.pack] = {**run.summary, "calibration_file": calibration_files[run.pack]}
    return {
        "format": ACCURACY_FORMAT,
        "created_at": now_iso(),
        "command": command,
        "dataset": {
            "root": str(dataset.root),
            "name": dataset.root.name,
            "fingerprint": dataset.fingerprint,
            "identities": len(dataset.identities),
            "images": len(dataset.samples),
        },
        "seed": settings.seed,
        "gallery_size": settings.gallery_size,
        "departures": settings.departures,
        "fmr_targets": list(settings.fmr_targets),
        "fpir_targets": list(settings.fpir_targets),
        "impostor_pairs": settings.impostor_pairs,
        "flip": flip,
        "pairs_file": pairs_file,
        "labels_file": labels_file,
        "conventions": CONVENTIONS,
        "packs": packs,
    }


def accuracy_markdown(report: dict) -> str:
    data = report["dataset"]
    packs = report["packs"]
    lines = [
        f"# Accuracy: {data['name']}",
        "",
        f"`{report['command']}`",
        "",
        f"Data set `{data['root']}`: {data['identities']} identities, {data['images']} images, "
        f"fingerprint `{data['fingerprint']}`. Seed {report['seed']}, {report['departures']} departures of "
        f"{report['gallery_size']} travelers, flip fusion {'on' if report['flip'] else 'off'}. {report['created_at']}.",
        "",
        "## 1:1 verification",
        "",
    ]
    targets = report["fmr_targets"]
    header = ["pack", *(f"FNMR@FMR={t:g} (thr)" for t in targets), "EER (thr)", "FTA", "FTE"]
    rows = []
    for name, pack in packs.items():
        v = pack["verification"]
        cells = [
            f"{percent(p['fnmr'])} ({p['threshold']:.3f}){'' if p['supported'] else ' *'}"
            for p in v["fnmr_at_fmr"]
        ]
        rows.append(
            [
                name,
                *cells,
                f"{percent(v['eer'])} ({v['eer_threshold']:.3f})",
                percent(pack["fta_rate"]),
                percent(pack["fte_rate"]),
            ]
        )
    lines += table(header, rows)
    lines += ["", "`*`: target below 1/n impostor comparisons, not measurable on this set.", ""]
    lines += ["Generalized rates (failures folded in, see conventions):", ""]
    rows = [
        [
            name,
            *(
                f"{percent(p['generalized_fnmr'])} / {percent(p['generalized_fmr'], 3)}"
                for p in pack["verification"]["fnmr_at_fmr"]
            ),
        ]
        for name, pack in packs.items()
    ]
    lines += table(["pack", *(f"GFNMR / GFMR @FMR={t:g}" for t in targets)], rows)
    lines += [
        "",
        "Confidence (95% Wilson interval) and the impostor comparisons each target needs (±30%):",
        "",
    ]
    rows = [
        [
            name,
            *(
                f"{_with_interval(p['fmr'], p['fmr_ci95'], 4)}; {_with_interval(p['fnmr'], p['fnmr_ci95'])}; "
                f"{p['pairs_needed']:,}"
                for p in pack["verification"]["fnmr_at_fmr"]
            ),
            _impostor_pairs(pack["verification"]),
        ]
        for name, pack in packs.items()
    ]
    lines += table(
        ["pack", *(f"FMR; FNMR; pairs needed @FMR={t:g}" for t in targets), "impostor comparisons"], rows
    )
    lfw = {name: pack["verification"].get("lfw_accuracy") for name, pack in packs.items()}
    if any(lfw.values()):
        lines += ["", "### LFW-style 10-fold accuracy", ""]
        rows = [
            [
                name,
                f"{percent(r['accuracy'])} ± {percent(r['std'])}",
                r["pairs"],
                r["folds"],
                r["failed_pairs"],
            ]
            for name, r in lfw.items()
            if r
        ]
        lines += table(["pack", "accuracy ± std", "pairs", "folds", "pairs with a failed image"], rows)
    lines += [
        "",
        f"## 1:N flight simulation (gallery {report['gallery_size']}, {report['departures']} departures)",
        "",
    ]
    fpir_targets = report["fpir_targets"]
    header = ["pack", "rank-1 (min-max)", *(f"FNIR@FPIR={t:g} (thr; min-median-max)" for t in fpir_targets)]
    header += ["mated / non-mated searches", "failed"]
    rows = []
    for name, pack in packs.items():
        ident = pack["identification"]
        spread = ident["rank1_spread"]
        cells = []
        for p in ident["fnir_at_fpir"]:
            s = p["fnir_spread"]
            flag = "" if p["supported"] else " *"
            cells.append(
                f"{percent(p['fnir'])} ({p['threshold']:.3f}; {percent(s['min'], 1)}-{percent(s['median'], 1)}-"
                f"{percent(s['max'], 1)}){flag}"
            )
        rows.append(
            [
                name,
                f"{percent(ident['rank1'])} ({percent(spread['min'], 1)}-{percent(spread['max'], 1)})",
                *cells,
                f"{ident['mated_searches']} / {ident['nonmated_searches']}",
                f"{ident['mated_failed']} / {ident['nonmated_failed']}",
            ]
        )
    lines += table(header, rows)
    lines += ["", "Confidence (95% Wilson interval):", ""]
    rows = [
        [
            name,
            *(
                f"{_with_interval(p['fpir'], p['fpir_ci95'])}; {_with_interval(p['fnir'], p['fnir_ci95'])}"
                for p in pack["identification"]["fnir_at_fpir"]
            ),
        ]
        for name, pack in packs.items()
    ]
    lines += table(["pack", *(f"FPIR; FNIR @FPIR={t:g}" for t in fpir_targets)], rows)
    singles = {pack["identification"]["single_image_identities"] for pack in packs.values()}
    if singles != {0}:
        lines += [
            "",
            f"{max(singles)} identities have a single image: they are never enrolled and are searched as "
            "non-mated probes in every departure.",
        ]
    for name, pack in packs.items():
        for attribute, groups in pack.get("subgroups", {}).items():
            lines += ["", f"### Subgroups by `{attribute}` ({name}, at the pooled thresholds)", ""]
            header = ["value", "identities", "images", "FTA"]
            header += [f"FNMR / FMR @{t:g}" for t in targets]
            header += [f"FNIR / FPIR @{t:g}" for t in fpir_targets] + ["rank-1"]
            rows = []
            for value, g in groups.items():
                verif = [
                    "-" if g["fnmr"] is None else f"{percent(g['fnmr'][k])} / {percent(g['fmr'][k], 3)}"
                    for k in range(len(targets))
                ]
                ident = [
                    "-" if g["fnir"] is None else f"{percent(g['fnir'][k])} / {percent(g['fpir'][k])}"
                    for k in range(len(fpir_targets))
                ]
                rows.append(
                    [
                        value,
                        g["identities"],
                        g["images"],
                        percent(g["fta_rate"]),
                        *verif,
                        *ident,
                        percent(g["rank1"]),
                    ]
                )
            lines += table(header, rows)
    lines += ["", "## Packs and models", ""]
    for name, pack in packs.items():
        use = "commercial use allowed" if pack["commercial_use"] else "NON-COMMERCIAL models"
        run = pack["embedding"]
        rate = "" if run["images_per_s"] is None else f", {run['images_per_s']} images/s"
        lines.append(
            f"- `{name}` ({use}; embedding {pack['embedding_s']} s with the {run['engine']} engine: "
            f"{run['new_images']} images embedded{rate}, {run['stored_images']} from the store; quality gate passed by "
            f"{percent(pack['quality_pass_rate'])} of faces; calibration table `{pack['calibration_file']}`)"
        )
        lines += [f"  - {model}: `{sha}`" for model, sha in pack["models"].items()]
    lines += ["", "## Conventions", ""]
    lines += [f"- {key}: {text}" for key, text in report["conventions"].items()]
    lines += ["", "Plots: `det.png` (1:1 DET), `flight_det.png` (1:N FPIR vs FNIR), `scores_<pack>.png`.", ""]
    return "\n".join(lines)


def _with_interval(rate: float, interval: Sequence[float], digits: int = 2) -> str:
    return f"{percent(rate, digits)} [{percent(interval[0], digits)}-{percent(interval[1], digits)}]"


def _impostor_pairs(verification: dict) -> str:
    if verification["impostor_sampled"]:
        return (
            f"{verification['impostor_comparisons']:,} sampled of {verification['impostor_population']:,} "
            "(seeded, uniform, with replacement)"
        )
    return f"all {verification['impostor_population']:,}"


def _det_samples(x: np.ndarray, y: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """About DET_POINTS points of a (falling x, rising y) staircase, spread evenly on a log x axis."""
    wanted = np.logspace(math.log10(floor), 0, DET_POINTS)
    index = np.unique(np.clip(np.searchsorted(-x, -wanted, side="left"), 0, x.size - 1))
    return x[index], y[index]


def _floored(
    x: Sequence[float], y: Sequence[float], x_trials: int, y_trials: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rates a log axis can show: a measured 0 is drawn at half the resolution 1/(2n) (see the axis labels)."""
    return np.maximum(x, 0.5 / x_trials), np.maximum(y, 0.5 / y_trials)


def _log_axes(axes: Axes, xlabel: str, ylabel: str, title: str) -> None:
    axes.set_xscale("log", nonpositive="clip")
    axes.set_yscale("log", nonpositive="clip")
    axes.set_xlabel(f"{xlabel}; 0 drawn at 1/(2n)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()


def plot_det(runs: Sequence[PackRun], path: Path, title: str) -> None:
    figure = Figure(figsize=(7, 5.5))  # no pyplot: no backend or global figure state
    axes = figure.subplots()
    for run in runs:
        _, fmr, fnmr = metrics.det_curve(run.scores.genuine, run.scores.impostor)
        trials = (run.scores.impostor.size, run.scores.genuine.size)
        x, y = _det_samples(fmr, fnmr, 1.0 / trials[0])
        line = axes.plot(*_floored(x, y, *trials), label=run.pack)[0]
        points = run.summary["verification"]["fnmr_at_fmr"]
        marks = _floored([p["fmr"] for p in points], [p["fnmr"] for p in points], *trials)
        axes.scatter(*marks, color=line.get_color())
    _log_axes(axes, "FMR (false match rate)", "FNMR (false non-match rate)", f"1:1 DET: {title}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_flight_det(runs: Sequence[PackRun], path: Path, title: str) -> None:
    figure = Figure(figsize=(7, 5.5))  # no pyplot: no backend or global figure state
    axes = figure.subplots()
    for run in runs:
        s = run.searches
        thresholds = np.unique(np.concatenate([s.mated_scores, s.nonmated_top[np.isfinite(s.nonmated_top)]]))
        thresholds = np.append(thresholds, np.inf)
        fpir, fnir = metrics.fpir_fnir(
            s.mated_scores,
            s.mated_ranks,
            s.nonmated_top,
            thresholds,
            mated_failed=int(s.mated_failed.sum()),
            nonmated_failed=int(s.nonmated_failed.sum()),
        )
        trials = (
            s.nonmated_top.size + int(s.nonmated_failed.sum()),
            s.mated_ranks.size + int(s.mated_failed.sum()),
        )
        x, y = _det_samples(fpir, fnir, 1.0 / trials[0])
        axes.plot(*_floored(x, y, *trials), label=run.pack)
    _log_axes(axes, "FPIR", "FNIR (rank 1)", f"1:N flight simulation: {title}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_scores(run: PackRun, path: Path, title: str) -> None:
    figure = Figure(figsize=(7, 4.5))  # no pyplot: no backend or global figure state
    axes = figure.subplots()
    bins = np.linspace(-0.4, 1.0, 141)
    axes.hist(run.scores.impostor, bins=bins, density=True, alpha=0.6, label="impostor")
    axes.hist(run.scores.genuine, bins=bins, density=True, alpha=0.6, label="genuine")
    top = axes.get_ylim()[1]
    for k, point in enumerate(run.summary["verification"]["fnmr_at_fmr"]):
        axes.axvline(point["threshold"], color="black", linestyle=":", linewidth=1)
        axes.text(point["threshold"], top * (0.95 - 0.07 * k), f" FMR {point['target']:g}", fontsize=7)
    axes.set_xlabel("cosine score")
    axes.set_ylabel("density")
    axes.set_title(f"Scores, {run.pack}: {title}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_accuracy(out: Path, report: dict, runs: Sequence[PackRun]) -> list[Path]:
    """report.json, report.md and the plots; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    title = report["dataset"]["name"]
    written = [out / "report.json", out / "report.md", out / "det.png", out / "flight_det.png"]
    write_json(written[0], report)
    written[1].write_text(accuracy_markdown(report), encoding="utf-8")
    plot_det(runs, written[2], title)
    plot_flight_det(runs, written[3], title)
    for run in runs:
        path = out / f"scores_{run.pack}.png"
        plot_scores(run, path, title)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------- latency


def latency_markdown(report: dict) -> str:
    lines = ["# Latency", "", f"`{report['command']}`", "", f"{report['created_at']}, {report['host']}", ""]
    load = report.get("load")
    if load:
        lines += [
            f"## End to end: {load['cameras']} cameras x {load['fps']} fps x {load['seconds']} s "
            f"against {load['target']} ({'in-process server' if load['in_process'] else 'external server'})",
            "",
        ]
        series = {
            name: load[name]
            for name in ("frame_latency", "analysed_frame_latency", "decision_latency", "encounter_elapsed")
        }
        series |= {
            f"decision_latency ({kind})": row for kind, row in load["decision_latency_by_kind"].items()
        }
        keys = ("p50_ms", "p95_ms", "p99_ms")
        rows = [
            [name, *("-" if row[k] is None else f"{row[k]:.1f}" for k in keys), row["count"]]
            for name, row in series.items()
        ]
        lines += table(["latency", "p50 ms", "p95 ms", "p99 ms", "n"], rows)
        server = load["server"]
        lines += [
            "",
            f"Frames sent {load['frames_sent']}, processed {load['frames_processed']} (passed over by the camera "
            f"focus {load['frames_passed_over']}), dropped "
            f"{load['frames_dropped']} (bad {load['frame_errors']}, over budget {load['frames_over_budget']}, "
            f"lost {load['frames_lost']}); throughput {load['throughput_fps']:.2f} "
            f"frames/s processed; decisions {load['decisions']}.",
            "Server-reported mean stage times (ms): "
            + ", ".join(f"{stage} {ms}" for stage, ms in load["server_stage_mean_ms"].items())
            + ".",
            f"Server CPU {server['cpu_s']} s ({server['cpu_cores']} cores busy on average), peak RSS "
            f"{server['peak_rss_mib']} MiB ({server['note']}).",
        ]
    capacity = report.get("capacity")
    if capacity:
        lines += capacity_markdown(capacity)
    focus = report.get("focus")
    if focus:
        lines += focus_markdown(focus)
    stages = report.get("stages")
    if stages:
        lines += [
            "",
            f"## Per-stage microbenchmark ({stages['pack']}, {stages['frames']} frames 640x480, "
            f"{stages['faces_per_frame']} faces/frame, {stages['threads']} threads)",
            "",
        ]
        columns = list(next(iter(stages["stages"].values())))
        rows = [[name, *(row[c] for c in columns)] for name, row in stages["stages"].items()]
        lines += table(["stage", *columns], rows)
        lines += [
            "",
            f"Overhead ratio (detect+align+embed) / raw session.run: {stages['overhead_ratio']}x "
            f"(with JPEG decode {stages['overhead_ratio_with_decode']}x).",
        ]
    return "\n".join(lines) + "\n"


def focus_markdown(focus: dict) -> list[str]:
    runs = focus["runs"]
    load = next(iter(runs.values()))["load"]
    before, between, after = focus["raw_model_ms_around"]
    lines = [
        "",
        f"## Server CPU per frame, camera focus off and on ({load['cameras']} cameras x {load['fps']:g} fps x "
        f"{load['seconds']:g} s, a fresh server process each)",
        "",
        f"Raw model time on the same frames: {focus['raw_model_ms_per_frame']} ms per frame ({focus['raw_note']}; "
        f"{before}, {between} and {after} ms before, between and after the servers: each server is held against "
        "the mean of the two next to it).",
        "",
    ]
    rows = []
    for name, run in runs.items():
        one = run["load"]
        rows.append(
            [
                name,
                run["server_cpu_ms_per_frame"],
                run["raw_model_ms"],
                f"{run['of_raw']}x" if run["of_raw"] is not None else "-",
                one["frames_processed"],
                one["frames_passed_over"],
                one["frames_lost"],
                one["analysed_frame_latency"]["p50_ms"],
                one["analysed_frame_latency"]["p99_ms"],
                ", ".join(f"{k} {v}" for k, v in sorted(one["decisions"].items())),
            ]
        )
    lines += table(
        [
            "path",
            "server CPU ms / frame",
            "raw ms / frame",
            "of raw",
            "processed",
            "passed over",
            "lost",
            "analysed frame p50 ms",
            "p99 ms",
            "decisions",
        ],
        rows,
    )
    stages = sorted({stage for run in runs.values() for stage in run["load"]["server_stage_ms_per_frame"]})
    lines += ["", "Server-reported stage time per processed frame (ms, wall clock inside the worker):", ""]
    lines += table(
        ["path", *stages],
        [
            [name, *(run["load"]["server_stage_ms_per_frame"].get(s, 0) for s in stages)]
            for name, run in runs.items()
        ],
    )
    return lines


def capacity_markdown(capacity: dict) -> list[str]:
    criteria = capacity["criteria"]
    count = capacity["capacity_cameras"]
    bound = "" if capacity["first_failing_cameras"] else " (every count tried held: a lower bound)"
    lines = [
        "",
        f"## Capacity: {count} cameras at {capacity['fps']:g} fps{bound}",
        "",
        f"A count holds when the p99 of analysed frames (not passed over) <= {criteria['frame_p99_ms']:g} ms "
        "and under "
        f"{criteria['max_lost_fraction']:.0%} of frames are lost (dropped, over budget, bad or unanswered); "
        f"{capacity['seconds_per_step']:g} s per step against {capacity['target']}.",
        "",
    ]
    keys = ("frame_p50_ms", "frame_p99_ms", "frames_sent", "frames_lost", "server_cpu_cores")
    rows = [
        [row["cameras"], *("-" if row[k] is None else row[k] for k in keys), row["reason"] or "held"]
        for row in capacity["steps"]
    ]
    lines += table(["cameras", "p50 ms", "p99 ms", "sent", "lost", "server cores", "verdict"], rows)
    lines += [
        "",
        f"Cameras per inference worker: {capacity['cameras_per_worker']} ({capacity['workers']} workers); "
        f"per busy core: {capacity['cameras_per_busy_core']} (server used "
        f"{capacity['server_cpu_cores_at_capacity']} cores at capacity).",
    ]
    return lines


def write_latency(out: Path, report: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "latency.json", out / "latency.md"]
    write_json(written[0], report)
    written[1].write_text(latency_markdown(report), encoding="utf-8")
    return written


def soak_markdown(report: dict) -> str:
    soak = report["soak"]
    verdict = soak["verdict"]
    lines = ["# Soak", "", f"`{report['command']}`", "", f"{report['created_at']}, {report['host']}", ""]
    lines += [
        f"{soak['cameras']} cameras x {soak['fps']} fps x {soak['seconds']:g} s against {soak['target']} "
        f"({soak['server_note']}) after a warm-up of {soak['warmup_s']:g} s, windows of {soak['window_s']:g} s, "
        f"a health check every {soak['health_interval_s']:g} s.",
        "",
    ]
    columns = ("window", "frames", "p50_ms", "p99_ms", "dropped", "rss_mib", "cpu_cores")
    rows = [
        [
            *("-" if row[c] is None else row[c] for c in columns),
            f"{row['health_serving']}/{row['health_checks']}",
        ]
        for row in soak["windows"]
    ]
    lines += table([*columns, "health SERVING/checks"], rows)
    lines += [
        "",
        f"Warm-up included: frames sent {soak['frames_sent']}, observed {soak['frames_observed']}, dropped "
        f"{soak['frames_dropped']} "
        f"(bad {soak['frame_errors']}); frame latency over the run p50 {soak['frame_latency']['p50_ms']} ms, "
        f"p99 {soak['frame_latency']['p99_ms']} ms; decisions {soak['decisions']}; slowest health answer "
        f"{soak['health_ms_max']} ms.",
        "",
        f"**{'PASS' if verdict['passed'] else 'FAIL'}** (last window at most {verdict['tolerance']:.0%} above the "
        "first):",
    ]
    for name in ("rss_mib", "p99_ms"):
        check = verdict[name]
        growth = "-" if check["growth"] is None else f"{check['growth']:+.1%}"
        lines.append(
            f"- {name}: first {check['first']}, last {check['last']}, {growth}: "
            f"{'pass' if check['passed'] else 'FAIL'}"
        )
    health = verdict["health"]
    lines.append(
        f"- health: {health['serving']} of {health['checks']} checks answered SERVING: "
        f"{'pass' if health['passed'] else 'FAIL'}"
    )
    failures = verdict["cameras"]["failures"]
    lines.append(
        f"- camera streams: {'FAIL: ' + '; '.join(failures) if failures else 'all lasted the run: pass'}"
    )
    return "\n".join(lines) + "\n"


def write_soak(out: Path, report: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "soak.json", out / "soak.md"]
    write_json(written[0], report)
    written[1].write_text(soak_markdown(report), encoding="utf-8")
    return written
