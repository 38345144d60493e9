"""Pipeline overhead on real 640x480 frames: raw `session.run` of detector and embedder vs the pipeline's stages.

The goal is pipeline time (detect + align + embed, on a decoded frame) <= 1.10x the raw model time: all the
numpy around the models (letterbox, decode of outputs, NMS, alignment, normalisation) must stay small next to
inference. Decoding the JPEG, the quality stage and the gallery search (each face against a flat gallery of
`--gallery-size` clustered templates, as `search_latency` builds them) are timed and printed too, but are not in
the ratio: a client calling the models raw would decode and search as well, and quality is a model of its own.

    python -m gatematch.benchmarks.overhead --video ../shared/video/hieubkvn123_obama.mp4 --pack default
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gatematch.align import norm_crop
from gatematch.benchmarks.search_latency import EMBEDDER, POINT, clustered, snapshot
from gatematch.errors import GatematchError
from gatematch.facepipeline import CROP_SIZE, FacePipeline, PipelineConfig
from gatematch.gallery import Gallery, build_index
from gatematch.images import decode_image, encode_jpeg
from gatematch.modelstore import ModelStore
from gatematch.process import configure_process
from gatematch.runtime import RuntimeConfig
from gatematch.video import sampled_frames

FRAME_SIZE = (640, 480)


def jpeg_frames(path: Path, count: int, size: tuple[int, int] = FRAME_SIZE) -> list[bytes]:
    """`count` JPEG frames spread over the video, at `size` (what a 640x480 gate camera sends)."""
    return [encode_jpeg(frame) for frame in sampled_frames(path, count, size)]


@dataclass(frozen=True)
class StageStats:
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float


def stats(samples: list[float]) -> StageStats:
    ms = np.asarray(samples) * 1000
    p50, p90, p95, p99 = (round(float(v), 3) for v in np.percentile(ms, [50, 90, 95, 99]))
    return StageStats(p50, p90, p95, p99, round(float(ms.mean()), 3))


def search_gallery(size: int, dim: int, seed: int = 0) -> Gallery:
    """A flat gallery of `size` clustered templates: search cost depends on count and dimension, not faces."""
    vectors, _ = clustered(size, dim, np.random.default_rng(seed))
    return snapshot(build_index(vectors, "flat"), vectors)


def measure(
    pipeline: FacePipeline, frames: list[bytes], repeats: int, gallery: Gallery | None = None
) -> dict:
    """Per-frame seconds of each stage; `search` (per frame, all its faces) only when a gallery is given."""
    detector, embedder = pipeline.detector, pipeline.embedder
    stages = ("decode", "detect", "align", "embed", "quality", "raw_detector", "raw_embedder")
    times: dict[str, list[float]] = {k: [] for k in (*stages, *(("search",) if gallery else ()))}
    crops = np.empty((8, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    faces_seen = 0
    for _ in range(repeats):
        for data in frames:
            t0 = time.perf_counter()
            image = decode_image(data)
            t1 = time.perf_counter()
            faces = detector.detect(image)[: len(crops)]
            t2 = time.perf_counter()
            for slot, face in enumerate(faces):
                norm_crop(image, face.landmarks, CROP_SIZE, out=crops[slot])
            t3 = time.perf_counter()
            batch = crops[: len(faces)]
            templates = embedder.embed(batch) if len(faces) else []
            t4 = time.perf_counter()
            pipeline.quality.assess(faces, batch)
            t5 = time.perf_counter()
            if gallery is not None:
                for template in templates:
                    gallery.search(template, EMBEDDER, None, point=POINT)
                times["search"].append(time.perf_counter() - t5)
            # The same work as raw model calls on already-prepared tensors.
            tensor = detector.prepare(image).tensor
            t6 = time.perf_counter()
            detector.infer(tensor)
            t7 = time.perf_counter()
            raw_embed = 0.0
            if len(faces):
                embed_tensor = embedder.prepare(batch)
                t8 = time.perf_counter()
                embedder.infer_rows(embed_tensor)
                raw_embed = time.perf_counter() - t8
            faces_seen += len(faces)
            for key, value in (
                ("decode", t1 - t0),
                ("detect", t2 - t1),
                ("align", t3 - t2),
                ("embed", t4 - t3),
                ("quality", t5 - t4),
                ("raw_detector", t7 - t6),
                ("raw_embedder", raw_embed),
            ):
                times[key].append(value)
    total_pipeline = np.sum([times[k] for k in ("detect", "align", "embed")])
    total_raw = np.sum([times[k] for k in ("raw_detector", "raw_embedder")])
    return {
        "pack": pipeline.pack.name,
        "frames": len(frames) * repeats,
        "frame_size": list(FRAME_SIZE),
        "faces_per_frame": round(faces_seen / (len(frames) * repeats), 2),
        "threads": pipeline.config.runtime.threads,
        "stages": {k: asdict(stats(v)) for k, v in times.items()},
        "overhead_ratio": round(float(total_pipeline / total_raw), 4),
        "overhead_ratio_with_decode": round(float((total_pipeline + np.sum(times["decode"])) / total_raw), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--video", type=Path, action="append", required=True, help="video(s) to take frames from"
    )
    parser.add_argument("--pack", default="default")
    parser.add_argument("--frames", type=int, default=30, help="frames per video")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)")
    parser.add_argument(
        "--gallery-size", type=int, default=420, help="templates searched per face (0: no search)"
    )
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    configure_process()
    frames = [f for video in args.video for f in jpeg_frames(video, args.frames)]
    config = PipelineConfig(runtime=RuntimeConfig(intra_op_threads=args.threads))
    pipeline = FacePipeline.from_pack(args.pack, ModelStore(args.model_dir), config)
    gallery = search_gallery(args.gallery_size, pipeline.embedding_size) if args.gallery_size > 0 else None
    measure(pipeline, frames[:5], 1, gallery)  # warm-up: first runs allocate arenas
    result = measure(pipeline, frames, args.repeats, gallery)
    print(
        f"pack {result['pack']}: {result['frames']} frames 640x480, {result['faces_per_frame']} faces/frame, "
        f"{result['threads']} threads"
    )
    columns = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")
    print(f"{'stage':<14}" + "".join(f"{c:>9}" for c in columns))
    for stage, row in result["stages"].items():
        print(f"{stage:<14}" + "".join(f"{row[c]:>9.3f}" for c in columns))
    print(
        f"overhead ratio (detect+align+embed) / (raw detector+embedder): {result['overhead_ratio']:.3f}x "
        f"(goal <= 1.10x); with JPEG decode: {result['overhead_ratio_with_decode']:.3f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except GatematchError as exc:
        raise SystemExit(f"overhead: error: {exc}") from None
