"""The `ray` embedding engine: Ray Data reads the image list and an actor pool runs the face pipeline.

Each actor builds one `FacePipeline` (sessions created once, one onnxruntime thread) and embeds batches with
`embeddings.embed_images`, the same code the local engine runs, so both give the same templates. Results stream
back to this process, which writes them into the embedding store as they come: a lost cluster costs only the
unwritten chunk. `ray.init()` starts Ray on this machine, or joins the cluster named by RAY_ADDRESS; on a cluster
every node needs gatematch installed, the models in the same model folder and the images at the same paths
(a shared file system).

Ray is an optional extra (`pip install 'gatematch[ray]'`) and is imported only when this engine is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from gatematch.benchmarks.embedding_store import EmbeddedBatch
from gatematch.benchmarks.embeddings import LOCAL_BATCH_SIZE, Engine, ImageItem, embed_images
from gatematch.errors import ConfigError, GatematchError
from gatematch.facepipeline import FacePipeline, PipelineConfig
from gatematch.modelstore import ModelStore

ACTOR_THREADS = 1  # onnxruntime threads per actor: one actor per core outruns one process using every core
BLOCK_IMAGES = 64  # images per Ray Data block: small enough to spread a small set over every actor


class PipelineActor:
    """One pack's pipeline in a Ray actor; Ray Data calls it with batches of the image list."""

    def __init__(self, pack: str, model_dir: str, config: PipelineConfig):
        self.pipeline = FacePipeline.from_pack(pack, ModelStore(Path(model_dir)), config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = list(zip(batch["sha256"].tolist(), batch["path"].tolist(), strict=True))
        result = embed_images(self.pipeline, items)
        return {
            "sha256": result.sha256,
            "embedding": result.embeddings,
            "acquired": result.acquired,
            "quality_passed": result.quality_passed,
        }


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'gatematch[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_cluster() -> Iterator[int]:
    """Ray for the block: the cluster at RAY_ADDRESS, else one started on this machine (and stopped after).
    Yields the CPUs the cluster offers."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        local = not os.environ.get("RAY_ADDRESS")
        ray.init(
            include_dashboard=False if local else None,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is enough
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset execution plan on stderr
    try:
        yield int(ray.cluster_resources().get("CPU", 1))
    finally:
        if started:
            ray.shutdown()


def ray_engine(
    pack: str,
    model_dir: Path,
    config: PipelineConfig,
    actors: int,
    batch_size: int = LOCAL_BATCH_SIZE,
) -> Engine:
    """Embeds on `actors` Ray actors (one CPU each); call inside `ray_cluster()`."""
    ray = _ray()
    actor_config = replace(config, runtime=replace(config.runtime, intra_op_threads=ACTOR_THREADS))

    def run(items: Sequence[ImageItem]) -> Iterator[EmbeddedBatch]:
        rows = [{"sha256": digest, "path": str(path)} for digest, path in items]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // BLOCK_IMAGES)))
        embedded = dataset.map_batches(
            PipelineActor,
            fn_constructor_kwargs={"pack": pack, "model_dir": str(model_dir), "config": actor_config},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=ACTOR_THREADS,
        )
        try:
            for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
                yield EmbeddedBatch(
                    batch["sha256"].astype(str),
                    np.asarray(batch["embedding"], np.float32),
                    np.asarray(batch["acquired"], bool),
                    np.asarray(batch["quality_passed"], bool),
                )
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, GatematchError):
                raise type(cause)(str(cause)) from None
            raise ConfigError(f"the Ray engine failed: {str(exc).strip().splitlines()[-1]}") from None

    return run
