"""The GPU path, tested where it can be without a GPU: which execution provider is chosen (and refused), and the
batching of concurrent callers' inputs into one session run, on the real models on the CPU.

No GPU is used here: with onnxruntime's CPU build a CUDA request is refused at start, `auto` runs on the CPU.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gatematch.batching import Batcher
from gatematch.errors import ConfigError
from gatematch.facepipeline import FacePipeline, PipelineConfig
from gatematch.images import load_image
from gatematch.runtime import CPU, CUDA, RuntimeConfig, execution_providers
from gatematch.service.config import InferenceConfig, load_config


def test_providers_follow_the_configured_choice() -> None:
    with_gpu = [CUDA, CPU]
    assert execution_providers(RuntimeConfig(), with_gpu) == [CPU]
    assert execution_providers(RuntimeConfig(provider="auto"), [CPU]) == [CPU]
    assert execution_providers(RuntimeConfig(provider="auto", device_id=1), with_gpu) == [
        (CUDA, {"device_id": 1}),
        CPU,  # what CUDA cannot run falls back to the CPU, operator by operator
    ]
    assert execution_providers(RuntimeConfig(provider="cuda"), with_gpu)[0] == (CUDA, {"device_id": 0})
    with pytest.raises(ConfigError, match="CUDA execution provider was asked for"):
        execution_providers(RuntimeConfig(provider="cuda"), [CPU])


def test_inference_settings_are_checked_when_the_config_is_read(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('[inference]\nprovider = "auto"\nbatch_max = 8\nbatch_wait_ms = 3\n')
    loaded = load_config(config, env={})
    assert loaded.inference == InferenceConfig(provider="auto", batch_max=8, batch_wait_ms=3.0)
    assert loaded.inference.runtime(1).batch_max == 8
    for bad in ('provider = "tpu"', "batch_max = 0", "batch_wait_ms = -1"):
        config.write_text(f"[inference]\n{bad}\n")
        with pytest.raises(ConfigError, match=r"^\[inference\] "):
            load_config(config, env={})


def test_a_cuda_request_on_a_cpu_build_is_refused_with_what_to_do(model_store) -> None:
    import onnxruntime

    if CUDA in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider: the refusal cannot be shown here")
    config = PipelineConfig(runtime=RuntimeConfig(provider="cuda"))
    with pytest.raises(ConfigError, match=r"CUDA execution provider was asked for, but .*onnxruntime"):
        FacePipeline.from_pack("default", store=model_store, config=config)
    auto = FacePipeline.from_pack(
        "default", store=model_store, config=PipelineConfig(runtime=RuntimeConfig(provider="auto"))
    )
    assert auto.detector.session.get_providers() == [CPU]


def test_concurrent_callers_share_runs_and_each_gets_its_own_rows() -> None:
    calls: list[int] = []

    def run(batch: np.ndarray) -> list[np.ndarray]:
        calls.append(len(batch))
        time.sleep(0.01)
        return [batch * 2, batch.sum(axis=1)]

    batcher = Batcher(run, max_batch=4, wait_s=0.05)
    inputs = [np.full((1, 3), i, np.float32) for i in range(8)]
    barrier = threading.Barrier(8)

    def one(i: int) -> list[np.ndarray]:
        barrier.wait()
        return batcher(inputs[i])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for i, (doubled, summed) in enumerate(results):
        assert doubled.shape == (1, 3) and (doubled == 2 * i).all() and summed[0] == 3 * i
    assert sum(calls) == 8 and max(calls) <= 4 and len(calls) < 8 and batcher.runs == len(calls)


def test_inputs_of_different_shapes_never_share_a_run_and_a_lone_caller_waits_briefly() -> None:
    shapes: list[tuple] = []
    batcher = Batcher(lambda b: (shapes.append(b.shape), [b])[1], max_batch=8, wait_s=0.02)
    with ThreadPoolExecutor(2) as pool:
        small, large = pool.map(batcher, [np.zeros((1, 2)), np.zeros((1, 5))])
    assert small[0].shape == (1, 2) and large[0].shape == (1, 5) and sorted(shapes) == [(1, 2), (1, 5)]
    start = time.monotonic()
    batcher(np.zeros((1, 2)))
    assert time.monotonic() - start < 1.0


def test_a_failed_run_fails_every_caller_of_the_batch() -> None:
    def run(batch: np.ndarray) -> list[np.ndarray]:
        raise RuntimeError("device lost")

    batcher = Batcher(run, max_batch=4, wait_s=0.05)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(batcher, np.zeros((1, 2))) for _ in range(3)]
        for future in futures:
            with pytest.raises(RuntimeError, match="device lost"):
                future.result(timeout=10)


def test_batched_models_answer_as_unbatched_ones(model_store, examples: Path) -> None:
    """YuNet (made batch-dynamic at load) and MobileFaceNet through the batcher, four threads at once: the same
    faces and the same embeddings as one at a time."""
    photos = [load_image(p) for p in sorted(examples.glob("*/*"))[:8]]
    solo = FacePipeline.from_pack("default", store=model_store)
    batched = FacePipeline.from_pack(
        "default",
        store=model_store,
        config=PipelineConfig(runtime=RuntimeConfig(batch_max=4, batch_wait_ms=200)),  # room on a busy box
    )
    expected = [solo.analyze_batch([p])[0] for p in photos]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: batched.analyze_batch([p])[0], photos))
    assert batched.detector._batcher.runs < len(photos), "some runs carried several photos"
    for one, other in zip(expected, got, strict=True):
        assert len(one.faces) == len(other.faces)
        for a, b in zip(one.faces, other.faces, strict=True):
            assert np.abs(a.detection.box - b.detection.box).max() < 1e-3
            assert float(a.embedding @ b.embedding) > 0.9999
