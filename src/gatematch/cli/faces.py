"""`gatematch detect` and `gatematch compare`: the face pipeline on image files, for operators and scripts."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from gatematch.cli.options import add_model_dir_option, print_json
from gatematch.errors import NoFaceError, PackError
from gatematch.facepipeline import Analysis, Face, FacePipeline
from gatematch.modelstore import ModelStore


def face_summary(face: Face) -> dict:
    det = face.detection
    summary: dict = {
        "box": [round(float(v), 1) for v in det.box],
        "score": round(det.score, 4),
        "landmarks": None if det.landmarks is None else np.round(det.landmarks, 1).tolist(),
    }
    if face.quality is not None:
        summary["quality"] = face.quality.as_dict()
    if face.liveness is not None:
        summary["liveness"] = round(face.liveness, 4)
    return summary


def _pipeline(args: argparse.Namespace) -> FacePipeline:
    return FacePipeline.from_pack(args.pack, ModelStore(args.model_dir))


def _detect(args: argparse.Namespace) -> int:
    pipeline = _pipeline(args)
    results = []
    for path in args.images:
        analysis = pipeline.analyze(Path(path))
        results.append(
            {
                "image": str(path),
                "size": list(analysis.image_size),
                "faces": [face_summary(f) for f in analysis.faces],
            }
        )
    if args.json:
        print_json({"pack": pipeline.pack.name, "results": results})
        return 0
    for result in results:
        print(f"{result['image']}: {len(result['faces'])} face(s)")
        for face in result["faces"]:
            quality = face.get("quality")
            verdict = (
                ""
                if quality is None
                else (
                    "quality ok" if quality["passed"] else "quality FAILED: " + "; ".join(quality["reasons"])
                )
            )
            print(f"  box {face['box']} score {face['score']:.3f} {verdict}")
    return 0


def _primary(analysis: Analysis, path: str) -> Face:
    face = analysis.primary()
    if face is None or face.embedding is None:
        raise NoFaceError(f"{path}: no face found")
    return face


def _compare(args: argparse.Namespace) -> int:
    pipeline = _pipeline(args)
    if pipeline.embedder is None:
        raise PackError(f"pack '{pipeline.pack.name}' has no embedder; it cannot compare faces")
    face_a = _primary(pipeline.analyze(Path(args.image_a)), args.image_a)
    face_b = _primary(pipeline.analyze(Path(args.image_b)), args.image_b)
    score = float(np.dot(face_a.embedding, face_b.embedding))
    threshold = (
        args.threshold if args.threshold is not None else float(pipeline.pack.embedder.params["threshold"])
    )
    result = {
        "score": round(score, 5),
        "same_person": score >= threshold,
        "threshold": threshold,
        "pack": pipeline.pack.name,
        "faces": {args.image_a: face_summary(face_a), args.image_b: face_summary(face_b)},
    }
    if args.json:
        print_json(result)
    else:
        verdict = "SAME person" if result["same_person"] else "DIFFERENT people"
        print(f"{verdict}: cosine {score:.4f} (threshold {threshold:.4f}, pack {pipeline.pack.name})")
    return 0


def cosine_threshold(text: str) -> float:
    """argparse type: a cosine threshold must be a number in [-1, 1], or every comparison decides the same."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be a cosine in [-1, 1], got {text!r}")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--pack", default="default", help="model pack (see `gatematch models list`)")
    add_model_dir_option(common)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    detect = commands.add_parser("detect", parents=[common], help="find faces and assess their quality")
    detect.add_argument("images", nargs="+", metavar="IMAGE")
    detect.set_defaults(handler=_detect)
    compare = commands.add_parser(
        "compare", parents=[common], help="1:1 comparison of the main face of two images"
    )
    compare.add_argument("image_a", metavar="IMAGE_A")
    compare.add_argument("image_b", metavar="IMAGE_B")
    compare.add_argument(
        "--threshold",
        type=cosine_threshold,
        default=None,
        help="cosine threshold (default: the embedder card's, set at FMR = 1e-3)",
    )
    compare.set_defaults(handler=_compare)
