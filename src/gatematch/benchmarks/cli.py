"""`gatematch bench accuracy` and `gatematch bench latency`: measure a pack before it goes to the gates."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

from gatematch.cli.options import add_model_dir_option


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command with every option spelled out (defaults included), as the report records it."""
    words = parser.prog.split()
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if isinstance(action, argparse._HelpAction) or value is None or value is False or value in ("", []):
            continue
        if not action.option_strings:
            words.append(str(value))
            continue
        flag = action.option_strings[-1]
        if value is True:
            words.append(flag)
        else:
            for item in value if isinstance(value, list) else [value]:
                words += [flag, str(item)]
    return shlex.join(words)


def check_output_folder(path: Path, option: str) -> None:
    """Refuse, before any work, a folder the run could not write into at its end (a file, or read-only)."""
    from gatematch.errors import ConfigError

    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{option} {path}: {folder} is a file, not a folder")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise ConfigError(f"{option} {path}: {folder} is not writable")
            return


def check_at_least(value: int, minimum: int, option: str) -> None:
    from gatematch.errors import ConfigError

    if value < minimum:
        raise ConfigError(f"{option} must be >= {minimum}, got {value}")


def _accuracy(args: argparse.Namespace) -> int:
    import contextlib

    from gatematch.benchmarks.accuracy import (
        AccuracySettings,
        calibration_table,
        check_dataset,
        evaluate_pack,
        pair_rows,
        read_labels,
    )
    from gatematch.benchmarks.dataset import scan_dataset
    from gatematch.benchmarks.embeddings import default_cache_dir
    from gatematch.benchmarks.metrics import parse_lfw_pairs
    from gatematch.benchmarks.report import accuracy_report, percent, write_accuracy
    from gatematch.cards import get_pack
    from gatematch.errors import ConfigError
    from gatematch.facepipeline import FacePipeline, PipelineConfig
    from gatematch.modelstore import ModelStore

    names = list(dict.fromkeys(args.pack or ["default"]))
    embedders: dict[str, str] = {}
    for name in names:
        pack = get_pack(name)
        if pack.embedder is None:
            raise ConfigError(f"pack '{name}' has no embedder: there is nothing to compare")
        if pack.embedder.name in embedders:
            raise ConfigError(
                f"packs '{embedders[pack.embedder.name]}' and '{name}' share the embedder {pack.embedder.name}: "
                "their calibration tables would overwrite each other; run them separately"
            )
        embedders[pack.embedder.name] = name
    check_output_folder(args.out, "--out")
    check_output_folder(args.cache or default_cache_dir(), "--cache")
    check_at_least(args.chunk_size, 1, "--chunk-size")
    check_at_least(args.impostor_pairs, 1, "--impostor-pairs")
    if args.ray_actors is not None:
        if args.engine != "ray":
            raise ConfigError("--ray-actors is an option of --engine ray")
        check_at_least(args.ray_actors, 1, "--ray-actors")
    settings = AccuracySettings(
        gallery_size=args.gallery_size,
        departures=args.departures,
        seed=args.seed,
        impostor_pairs=args.impostor_pairs,
    )
    dataset = scan_dataset(args.root)
    check_dataset(dataset, settings)
    pairs = parse_lfw_pairs(args.pairs, root=dataset.root) if args.pairs else None
    if pairs:
        pair_rows(dataset, pairs)
    labels = read_labels(args.labels, dataset.identities) if args.labels else None
    command = command_line(args.parser, args)
    store = ModelStore(args.model_dir)
    runs, calibration_files = [], {}
    if args.engine == "ray":
        from gatematch.benchmarks.ray_engine import ray_cluster, ray_engine

        cluster = ray_cluster()
    else:
        cluster = contextlib.nullcontext(0)
    with cluster as cpus:
        for name in names:
            config = PipelineConfig(flip=args.flip)
            pipeline = FacePipeline.from_pack(name, store, config)
            engine = None
            if args.engine == "ray":
                engine = ("ray", ray_engine(name, store.root, config, args.ray_actors or cpus))
            run = evaluate_pack(
                dataset,
                pipeline,
                settings,
                engine=engine,
                chunk_size=args.chunk_size,
                pairs=pairs,
                labels=labels,
                cache_dir=args.cache,
                progress=not args.quiet,
            )
            table = calibration_table(run, dataset)
            calibration_files[name] = f"{table.embedder}.json"
            table.save(args.out / calibration_files[name])
            runs.append(run)
    report = accuracy_report(
        dataset,
        settings,
        runs,
        command=command,
        flip=args.flip,
        calibration_files=calibration_files,
        pairs_file=str(args.pairs) if args.pairs else None,
        labels_file=str(args.labels) if args.labels else None,
    )
    write_accuracy(args.out, report, runs)
    for name, pack in report["packs"].items():
        verification, ident = pack["verification"], pack["identification"]
        fnmr = ", ".join(f"{percent(p['fnmr'])}@{p['target']:g}" for p in verification["fnmr_at_fmr"])
        fnir = ", ".join(f"{percent(p['fnir'])}@{p['target']:g}" for p in ident["fnir_at_fpir"])
        embedding = pack["embedding"]
        print(
            f"{name}: FNMR {fnmr}; EER {percent(verification['eer'])}; rank-1 {percent(ident['rank1'])}; "
            f"FNIR {fnir}; FTA {percent(pack['fta_rate'])}; FTE {percent(pack['fte_rate'])}; "
            f"embedded {embedding['new_images']} images ({embedding['engine']}), "
            f"{embedding['stored_images']} from the store"
        )
    print(f"report: {args.out / 'report.md'}")
    return 0


def _latency(args: argparse.Namespace) -> int:
    from gatematch.benchmarks import overhead
    from gatematch.benchmarks.latency import (
        MAX_CAMERAS,
        CapacityCriteria,
        LoadSettings,
        capacity_counts,
        check_loopback,
        compare_focus,
        find_capacity,
        in_process_server,
        load_gallery,
        run_load,
    )
    from gatematch.benchmarks.report import now_iso, write_latency
    from gatematch.calibration import CalibrationTable
    from gatematch.cards import get_pack
    from gatematch.errors import ConfigError
    from gatematch.facepipeline import FacePipeline, PipelineConfig
    from gatematch.modelstore import ModelStore
    from gatematch.runtime import RuntimeConfig

    if args.no_stages and args.no_load:
        raise ConfigError("--no-stages and --no-load together leave nothing to measure")
    if args.find_capacity and args.no_load:
        raise ConfigError("--find-capacity steps up the end-to-end load: it cannot run with --no-load")
    if args.compare_focus and (args.target or args.find_capacity or args.no_load or args.gallery is None):
        raise ConfigError(
            "--compare-focus starts its own servers and needs --gallery FOLDER; it cannot run with --target, "
            "--find-capacity or --no-load"
        )
    check_output_folder(args.out, "--out")
    for value, minimum, option in (
        (args.repeats, 1, "--repeats"),
        (args.stage_frames, 1, "--stage-frames"),
        (args.search_gallery_size, 1, "--search-gallery-size"),
        (args.threads, 0, "--threads"),
        (args.workers, 0, "--workers"),
    ):
        check_at_least(value, minimum, option)
    max_cameras = MAX_CAMERAS if args.max_cameras is None else args.max_cameras
    if args.find_capacity:
        capacity_counts(args.cameras, max_cameras, args.step)
    limits = {"frame_p99_ms": args.p99_budget_ms, "max_lost_fraction": args.max_lost}
    criteria = CapacityCriteria(**{name: value for name, value in limits.items() if value is not None})
    if get_pack(args.pack).embedder is None:
        raise ConfigError(f"pack '{args.pack}' has no embedder: there is nothing to match")
    if args.gallery is not None and not args.gallery.is_dir():
        raise ConfigError(f"gallery folder {args.gallery} does not exist")
    settings = LoadSettings(tuple(args.video), args.flight, args.cameras, args.fps, args.seconds)
    if args.target:
        check_loopback(args.target)
    elif not args.no_load and args.gallery is None:
        raise ConfigError(
            "an in-process server needs --gallery FOLDER (one sub-folder of photos per traveler)"
        )
    store = ModelStore(args.model_dir)
    report: dict[str, object] = {
        "format": "gatematch-latency-report/1",
        "created_at": now_iso(),
        "command": command_line(args.parser, args),
        "host": f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
    }
    if not args.no_stages:
        config = PipelineConfig(runtime=RuntimeConfig(intra_op_threads=args.threads))
        pipeline = FacePipeline.from_pack(args.pack, store, config)
        frames = [f for video in args.video for f in overhead.jpeg_frames(video, args.stage_frames)]
        gallery = overhead.search_gallery(args.search_gallery_size, pipeline.embedding_size)
        overhead.measure(pipeline, frames[:3], 1, gallery)  # warm-up: first runs allocate arenas
        report["stages"] = overhead.measure(pipeline, frames, args.repeats, gallery)
        report["stages"]["search_gallery_size"] = args.search_gallery_size
        del pipeline

    def measure_load(target: str, server_pid: int | None, in_process: bool, workers: int | None) -> None:
        if not args.find_capacity:
            report["load"] = run_load(target, settings, server_pid, in_process)
            return
        report["capacity"] = find_capacity(
            target,
            settings,
            criteria,
            max_cameras=max_cameras,
            step=args.step,
            server_pid=server_pid,
            in_process=in_process,
            workers=workers,
            progress=lambda row: print(
                f"{row['cameras']} cameras: frame p99 {row['frame_p99_ms']} ms, "
                f"{row['lost_fraction']:.1%} lost: {'held' if row['passed'] else row['reason']}",
                file=sys.stderr,
                flush=True,
            ),
        )

    if not args.no_load:
        import grpc

        target = args.target or "the in-process service"
        try:
            if args.compare_focus:
                report["focus"] = compare_focus(settings, args.pack, store, args.gallery, args.workers)
            elif args.target:
                if args.gallery:
                    report["gallery"] = load_gallery(args.target, args.flight, args.gallery)
                measure_load(args.target, args.server_pid, False, None)
            else:
                calibration = CalibrationTable.load(args.calibration) if args.calibration else None
                with in_process_server(
                    args.pack, store, calibration, args.workers, args.focus == "on"
                ) as target:
                    report["gallery"] = load_gallery(target, args.flight, args.gallery)
                    measure_load(target, None, True, args.workers or os.cpu_count())
        except grpc.RpcError as exc:
            raise ConfigError(
                f"cannot reach the service at {target}: {exc.code().name}: {exc.details()}"
            ) from None
    written = write_latency(args.out, report)
    print(written[1].read_text(encoding="utf-8"))
    return 0


def _encounters(args: argparse.Namespace) -> int:
    from gatematch.benchmarks.dataset import scan_dataset
    from gatematch.benchmarks.embeddings import default_cache_dir
    from gatematch.benchmarks.encounters import (
        EncounterSettings,
        cached_stills,
        enroll_folder,
        fused_calibration_tables,
        read_video_list,
        simulate_videos,
        stills_report,
        write,
    )
    from gatematch.benchmarks.report import now_iso
    from gatematch.cards import get_pack
    from gatematch.errors import ConfigError
    from gatematch.facepipeline import FacePipeline
    from gatematch.gallery import (
        Calibrations,
        ModelRef,
        fused_calibration_name,
        load_default_calibration,
        load_fused_calibrations,
    )
    from gatematch.modelstore import ModelStore
    from gatematch.service.config import EncounterConfig, FocusConfig

    if (args.root is None) == (args.videos is None):
        raise ConfigError("give a photo set ROOT, or --videos CSV with --gallery FOLDER (not both)")
    if args.videos is not None and args.gallery is None:
        raise ConfigError("--videos needs --gallery FOLDER (one sub-folder of photos per traveler)")
    for value, minimum, option in (
        (args.departures, 1, "--departures"),
        (args.frames, 1, "--frames"),
        (args.gallery_size, 1, "--gallery-size"),
        (args.tailgating_pairs, 0, "--tailgating-pairs"),
    ):
        check_at_least(value, minimum, option)
    if not args.fps > 0 or not all(0 < t < 1 for t in args.target_fpir or [0.003]):
        raise ConfigError("--fps must be > 0 and every --target-fpir in (0, 1)")
    check_output_folder(args.out, "--out")
    default = EncounterConfig()
    try:
        frames = tuple(int(v) for v in args.decision_frames.split(",")) if args.decision_frames else None
        shares = tuple(float(v) for v in args.fpir_shares.split(",")) if args.fpir_shares else None
    except ValueError:
        raise ConfigError(
            "--decision-frames takes integers and --fpir-shares numbers, comma-separated"
        ) from None
    rule = replace(
        default,
        decision_frames=frames or default.decision_frames,
        fpir_shares=shares or default.fpir_shares,
        fuse_best=args.fuse_best or default.fuse_best,
    )
    settings = EncounterSettings(
        gallery_size=args.gallery_size,
        departures=args.departures,
        frames=args.frames,
        fps=args.fps,
        targets=tuple(dict.fromkeys(args.target_fpir or [0.003, 0.01])),
        tailgating_pairs=args.tailgating_pairs,
        seed=args.seed,
        rule=rule,
    )
    names = list(dict.fromkeys(args.pack or ["default"]))
    for name in names:
        if get_pack(name).embedder is None:
            raise ConfigError(f"pack '{name}' has no embedder: there is nothing to match")
    dataset = scan_dataset(args.root) if args.root is not None else None
    cases = read_video_list(args.videos) if args.videos is not None else None
    store = ModelStore(args.model_dir)
    report: dict[str, object] = {
        "format": "gatematch-encounters-report/1",
        "created_at": now_iso(),
        "command": command_line(args.parser, args),
        "packs": {},
    }
    variants = {"on": [True], "off": [False], "both": [True, False]}[args.focus]
    for name in names:
        pipeline = FacePipeline.from_pack(name, store)
        embedder = pipeline.pack.embedder.name
        calibrations = Calibrations(load_default_calibration(embedder), load_fused_calibrations(embedder))
        stills = None
        if dataset is not None:
            stills = cached_stills(
                dataset, pipeline, args.cache or default_cache_dir(), progress=not args.quiet
            )
            if args.write_calibration:
                args.out.mkdir(parents=True, exist_ok=True)
                for frames, table in fused_calibration_tables(
                    stills, pipeline, dataset, rule.fuse_best
                ).items():
                    table.save(args.out / fused_calibration_name(embedder, frames))
        gallery = None
        if cases is not None:
            gallery, failed = enroll_folder(args.gallery, pipeline, ModelRef.of(pipeline.pack.embedder))
        for focused in variants:
            run = replace(settings, focus=FocusConfig() if focused else None)
            body: dict[str, object] = {
                "commercial_use": pipeline.pack.commercial_use,
                "focus": asdict(run.focus) if run.focus is not None else None,
            }
            if stills is not None:
                body["dataset"] = {"root": str(dataset.root), "fingerprint": dataset.fingerprint}
                body["stills"] = stills_report(stills, pipeline, calibrations, run, progress=not args.quiet)
            if gallery is not None:
                body["enrollment_failures"] = failed
                body["videos"] = simulate_videos(cases, gallery, pipeline, calibrations, run, run.targets[0])
            label = name if len(variants) == 1 else f"{name}, focus {'on' if focused else 'off'}"
            report["packs"][label] = body
    written = write(args.out, report)
    print(written[1].read_text(encoding="utf-8"))
    return 0


def _soak(args: argparse.Namespace) -> int:
    import grpc

    from gatematch.benchmarks.calibration import CalibrationTable
    from gatematch.benchmarks.latency import check_loopback, in_process_server, load_gallery
    from gatematch.benchmarks.report import now_iso, write_soak
    from gatematch.benchmarks.soak import SoakSettings, run_soak
    from gatematch.errors import ConfigError
    from gatematch.modelstore import ModelStore

    check_output_folder(args.out, "--out")
    check_at_least(args.workers, 0, "--workers")
    if args.gallery is not None and not args.gallery.is_dir():
        raise ConfigError(f"gallery folder {args.gallery} does not exist")
    settings = SoakSettings(
        tuple(args.video),
        args.flight,
        args.cameras,
        args.fps,
        args.minutes * 60,
        window_s=args.window_s,
        warmup_s=args.warmup_s,
        health_interval_s=args.health_interval_s,
        tolerance=args.tolerance,
    )
    if args.target:
        check_loopback(args.target)
    elif args.gallery is None:
        raise ConfigError(
            "an in-process server needs --gallery FOLDER (one sub-folder of photos per traveler)"
        )
    report: dict[str, object] = {
        "format": "gatematch-soak-report/1",
        "created_at": now_iso(),
        "command": command_line(args.parser, args),
        "host": f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
    }
    target = args.target or "the in-process service"
    try:
        if args.target:
            if args.gallery:
                report["gallery"] = load_gallery(args.target, args.flight, args.gallery)
            report["soak"] = run_soak(args.target, settings, args.server_pid, in_process=False)
        else:
            calibration = CalibrationTable.load(args.calibration) if args.calibration else None
            store = ModelStore(args.model_dir)
            with in_process_server(args.pack, store, calibration, args.workers) as target:
                report["gallery"] = load_gallery(target, args.flight, args.gallery)
                report["soak"] = run_soak(target, settings, None, in_process=True)
    except grpc.RpcError as exc:
        raise ConfigError(
            f"cannot reach the service at {target}: {exc.code().name}: {exc.details()}"
        ) from None
    written = write_soak(args.out, report)
    print(written[1].read_text(encoding="utf-8"))
    return 0 if report["soak"]["verdict"]["passed"] else 1


def _window_fidelity(args: argparse.Namespace) -> int:
    import json

    from gatematch.benchmarks.window_fidelity import images_of, measure
    from gatematch.errors import ConfigError
    from gatematch.facepipeline import FacePipeline
    from gatematch.modelstore import ModelStore
    from gatematch.service.config import FocusConfig

    check_at_least(args.every, 1, "--every")
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        raise ConfigError(f"no such folder or video: {', '.join(missing)}")
    given = {
        "margin": args.margin,
        "max_margin_px": args.max_margin_px,
        "max_window_share": args.max_window_share,
    }
    config = FocusConfig(**{name: value for name, value in given.items() if value is not None})
    pipeline = FacePipeline.from_pack(args.pack, ModelStore(args.model_dir))
    print(json.dumps(measure(pipeline, config, images_of(args.paths, args.every, args.fps)), indent=2))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from gatematch.benchmarks.embedding_store import DEFAULT_CHUNK_SIZE
    from gatematch.benchmarks.protocols import DEFAULT_IMPOSTOR_PAIRS

    bench = commands.add_parser(
        "bench", help="accuracy, encounter, latency, soak and window-fidelity benchmarks"
    )
    kinds = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")

    accuracy = kinds.add_parser(
        "accuracy", help="1:1 and flight-simulation 1:N error rates of packs on a labelled photo set"
    )
    accuracy.add_argument("root", type=Path, metavar="ROOT", help="data set: ROOT/<identity>/<image>")
    accuracy.add_argument("--pack", action="append", help="model pack; repeat to compare (default: default)")
    accuracy.add_argument(
        "--pairs", type=Path, default=None, help="LFW View-2 pairs file: 10-fold accuracy too"
    )
    accuracy.add_argument(
        "--labels", type=Path, default=None, help="CSV: identity column + attribute columns"
    )
    accuracy.add_argument(
        "--gallery-size", type=int, default=420, help="travelers per departure (default 420)"
    )
    accuracy.add_argument("--departures", type=int, default=40, help="simulated departures (default 40)")
    accuracy.add_argument("--seed", type=int, default=0)
    accuracy.add_argument("--flip", action="store_true", help="flip-fusion embeddings")
    accuracy.add_argument("--out", type=Path, default=Path("bench-accuracy"), help="report folder")
    accuracy.add_argument(
        "--cache", type=Path, default=None, help="embedding cache (default: the user cache)"
    )
    accuracy.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="where images are embedded: this process, or Ray (RAY_ADDRESS, else Ray on this machine)",
    )
    accuracy.add_argument(
        "--ray-actors", type=int, default=None, help="Ray actors (default: one per CPU of the cluster)"
    )
    accuracy.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"images per stored chunk: the most a killed run loses (default {DEFAULT_CHUNK_SIZE})",
    )
    accuracy.add_argument(
        "--impostor-pairs",
        type=int,
        default=DEFAULT_IMPOSTOR_PAIRS,
        help="score all 1:1 impostor pairs up to this many, else sample this many (more if the lowest FMR "
        f"target needs it) (default {DEFAULT_IMPOSTOR_PAIRS:,})",
    )
    accuracy.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_dir_option(accuracy)
    accuracy.set_defaults(handler=_accuracy, parser=accuracy)

    encounters = kinds.add_parser(
        "encounters",
        help="the gate's encounter decisions (tracker + fusion + operating point) on photo sets or videos",
    )
    encounters.add_argument(
        "root", type=Path, nargs="?", default=None, metavar="ROOT", help="photo set: ROOT/<identity>/<image>"
    )
    encounters.add_argument("--videos", type=Path, default=None, help="CSV video,identity (empty: nobody)")
    encounters.add_argument(
        "--gallery", type=Path, default=None, help="with --videos: FOLDER/<traveler>/<photos>"
    )
    encounters.add_argument(
        "--pack", action="append", help="model pack; repeat to compare (default: default)"
    )
    encounters.add_argument("--gallery-size", type=int, default=200, help="travelers per departure")
    encounters.add_argument("--departures", type=int, default=100, help="simulated departures")
    encounters.add_argument("--frames", type=int, default=5, help="k: frames per simulated encounter")
    encounters.add_argument(
        "--fps", type=float, default=5.0, help="frames per second of the simulated camera"
    )
    encounters.add_argument(
        "--target-fpir", type=float, action="append", help="operating point(s) (default: 0.003 and 0.01)"
    )
    encounters.add_argument(
        "--decision-frames",
        default=None,
        help="usable frames at each search, e.g. 1,5 (default: the service's)",
    )
    encounters.add_argument(
        "--fpir-shares",
        default=None,
        help="share of the target per search, e.g. 0.2,0.8 (default: the service's)",
    )
    encounters.add_argument(
        "--fuse-best", type=int, default=None, help="frames averaged (default: the service's)"
    )
    encounters.add_argument(
        "--cache", type=Path, default=None, help="analysed photos are cached here (default: the user cache)"
    )
    encounters.add_argument(
        "--tailgating-pairs", type=int, default=20, help="back-to-back pairs per departure"
    )
    encounters.add_argument("--seed", type=int, default=0)
    encounters.add_argument(
        "--write-calibration",
        action="store_true",
        help="photo sets: also measure the fused-frame calibration tables (<embedder>.fused-<k>.json in --out)",
    )
    encounters.add_argument(
        "--focus",
        choices=("on", "off", "both"),
        default="on",
        help="replay the camera stream's focus (service default: on), every stage on every frame, or both",
    )
    encounters.add_argument("--out", type=Path, default=Path("bench-encounters"), help="report folder")
    encounters.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_dir_option(encounters)
    encounters.set_defaults(handler=_encounters, parser=encounters)

    latency = kinds.add_parser(
        "latency", help="end-to-end load on a loopback service and per-stage times on real video frames"
    )
    latency.add_argument(
        "--video", type=Path, action="append", required=True, help="camera video; repeatable"
    )
    latency.add_argument("--gallery", type=Path, default=None, help="FOLDER/<traveler>/<photos> to enroll")
    latency.add_argument("--flight", default="BENCH1", help="flight whose gallery the cameras search")
    latency.add_argument(
        "--target", default=None, help="a running service on loopback (default: start one here)"
    )
    latency.add_argument("--server-pid", type=int, default=None, help="its process id, for CPU and peak RSS")
    latency.add_argument("--cameras", type=int, default=2)
    latency.add_argument("--fps", type=float, default=5.0, help="frames per second per camera")
    latency.add_argument("--seconds", type=float, default=10.0, help="streaming time")
    latency.add_argument("--pack", default="default")
    latency.add_argument("--calibration", type=Path, default=None, help="table for the in-process server")
    latency.add_argument(
        "--workers", type=int, default=0, help="in-process inference workers (0 = one per core)"
    )
    latency.add_argument(
        "--stage-frames", type=int, default=20, help="frames per video for the stage timings"
    )
    latency.add_argument("--repeats", type=int, default=3)
    latency.add_argument(
        "--threads", type=int, default=0, help="stage timings: onnxruntime threads (0 = all)"
    )
    latency.add_argument("--search-gallery-size", type=int, default=420)
    latency.add_argument(
        "--find-capacity",
        action="store_true",
        help="step the cameras up from --cameras until frame p99 or lost frames break the limits below; "
        "report the last count that held",
    )
    latency.add_argument(
        "--max-cameras", type=int, default=None, help="capacity: highest count tried (default: the cap, 32)"
    )
    latency.add_argument("--step", type=int, default=1, help="capacity: cameras added per step")
    latency.add_argument(
        "--p99-budget-ms",
        type=float,
        default=None,
        help="capacity: frame p99 limit (default: the service's frame budget, 500)",
    )
    latency.add_argument(
        "--max-lost",
        type=float,
        default=None,
        help="capacity: a step holds only under this share of lost frames (default 0.01)",
    )
    latency.add_argument(
        "--focus",
        choices=("on", "off"),
        default="on",
        help="the in-process server's camera focus (service default: on)",
    )
    latency.add_argument(
        "--compare-focus",
        action="store_true",
        help="server CPU per frame with the camera focus off and on (a fresh server process each) against the "
        "raw detector + embedder time on the same frames",
    )
    latency.add_argument("--no-stages", action="store_true", help="skip the per-stage microbenchmark")
    latency.add_argument("--no-load", action="store_true", help="skip the end-to-end load")
    latency.add_argument("--out", type=Path, default=Path("bench-latency"), help="report folder")
    add_model_dir_option(latency)
    latency.set_defaults(handler=_latency, parser=latency)

    soak = kinds.add_parser(
        "soak",
        help="N cameras for T minutes on loopback: p50/p99, RSS, drops and health per minute, pass/fail",
    )
    soak.add_argument("--video", type=Path, action="append", required=True, help="camera video; repeatable")
    soak.add_argument("--gallery", type=Path, default=None, help="FOLDER/<traveler>/<photos> to enroll")
    soak.add_argument("--flight", default="SOAK1", help="flight whose gallery the cameras search")
    soak.add_argument(
        "--target", default=None, help="a running service on loopback (default: start one here)"
    )
    soak.add_argument("--server-pid", type=int, default=None, help="its process id (needed with --target)")
    soak.add_argument("--cameras", type=int, default=8)
    soak.add_argument("--fps", type=float, default=10.0, help="frames per second per camera")
    soak.add_argument("--minutes", type=float, default=10.0, help="streaming time")
    soak.add_argument("--window-s", type=float, default=60.0, help="reporting window (default a minute)")
    soak.add_argument(
        "--warmup-s", type=float, default=60.0, help="streaming before the first window, in no window"
    )
    soak.add_argument("--health-interval-s", type=float, default=2.0, help="seconds between health checks")
    soak.add_argument(
        "--tolerance", type=float, default=0.10, help="allowed growth of RSS and p99, last vs first window"
    )
    soak.add_argument("--pack", default="default")
    soak.add_argument("--calibration", type=Path, default=None, help="table for the in-process server")
    soak.add_argument(
        "--workers", type=int, default=0, help="in-process inference workers (0 = one per core)"
    )
    soak.add_argument("--out", type=Path, default=Path("bench-soak"), help="report folder")
    add_model_dir_option(soak)
    soak.set_defaults(handler=_soak, parser=soak)

    fidelity = kinds.add_parser(
        "window-fidelity",
        help="landmarks and template of faces in their camera-focus window against the whole frame",
    )
    fidelity.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="folders of photos or videos")
    fidelity.add_argument("--pack", default="default")
    fidelity.add_argument("--margin", type=float, help="[focus] margin (default: the service's)")
    fidelity.add_argument(
        "--max-margin-px", type=float, help="[focus] max_margin_px (default: the service's)"
    )
    fidelity.add_argument(
        "--max-window-share",
        type=float,
        help="[focus] max_window_share; 1 measures every face in a window, even where the stream would run "
        "the whole frame",
    )
    fidelity.add_argument("--every", type=int, default=1, help="every n-th photo or sampled frame")
    fidelity.add_argument("--fps", type=float, default=5.0, help="video frames sampled per second")
    add_model_dir_option(fidelity)
    fidelity.set_defaults(handler=_window_fidelity, parser=fidelity)
