"""onnxruntime sessions: created once per model, shared by every thread, with explicit thread counts.

Several sessions on a two-core gate box must not each spawn a thread per core and fight; the counts are
set here, in one place, from `RuntimeConfig`. So is the execution provider: the CPU by default; onnxruntime's
CUDA provider when asked (`cuda`: refused at start when this onnxruntime has none, `auto`: used when present),
with the CPU provider behind it for any operator CUDA does not run. On a GPU, frames of several cameras are
batched into one run (gatematch.batching).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from onnx import numpy_helper

from gatematch.cards import ModelCard
from gatematch.errors import ConfigError, ModelError

LOG_ERRORS_ONLY = 3  # per session: UltraFace's initializer-as-input warning is harmless noise
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
PROVIDERS = ("cpu", "cuda", "auto")
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeConfig:
    intra_op_threads: int = 0  # 0 = one per core
    allow_spinning: bool = (
        True  # spinning trades idle CPU for latency; turn off when many workers share cores
    )
    provider: str = (
        "cpu"  # cpu | cuda (refused when onnxruntime has no CUDA provider) | auto (CUDA when present)
    )
    device_id: int = 0  # the GPU, with cuda or auto
    batch_max: int = 1  # > 1: inputs of concurrent callers run as one batch (gatematch.batching), on a GPU
    batch_wait_ms: float = 2.0  # how long the first of a batch waits for batch-mates

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ConfigError(
                f"execution provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}"
            )
        if self.batch_max < 1 or self.batch_wait_ms < 0 or self.device_id < 0:
            raise ConfigError("batch_max must be >= 1, batch_wait_ms and device_id >= 0")

    @property
    def threads(self) -> int:
        return self.intra_op_threads or os.cpu_count() or 1


def execution_providers(config: RuntimeConfig, available: list[str] | None = None) -> list[Any]:
    """The providers a session is created with, in order of preference, for the configured choice."""
    available = ort.get_available_providers() if available is None else available
    if config.provider == "cpu" or (config.provider == "auto" and CUDA not in available):
        return [CPU]
    if CUDA not in available:
        raise ConfigError(f"the CUDA execution provider was asked for, but {_missing_cuda()}")
    return [(CUDA, {"device_id": config.device_id}), CPU]


def _missing_cuda() -> str:
    """Why onnxruntime offers no CUDA provider, in terms an operator can act on."""
    installed = set()
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.version(name)
            installed.add(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    if installed == {"onnxruntime", "onnxruntime-gpu"}:
        return (
            "both onnxruntime and onnxruntime-gpu are installed and the CPU one won: "
            "`pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu`"
        )
    if "onnxruntime-gpu" in installed:
        return "onnxruntime-gpu finds no usable CUDA (driver, CUDA or cuDNN libraries missing)"
    return "this onnxruntime is the CPU build: install the gpu extra (`pip install -e '.[gpu]'`, README)"


def dynamic_model(path: Path, batch: bool = True, spatial: bool = False) -> bytes:
    """The model with fixed input dimensions made symbolic, for files exported with them pinned.

    `batch` (files exported with batch 1): input/output batch dims become symbolic and a Reshape whose target
    pins batch 1 copies the batch instead (ONNX Reshape: 0 = keep that input dimension). `spatial` (cards with
    `any_size`): the input's height and width and the outputs' anchor counts become symbolic; the graph itself
    must not depend on them (the card says so; the detector tests hold the result to OpenCV's at other sizes).
    """
    model = onnx.load(str(path))
    if batch:
        constants = {node.output[0]: node for node in model.graph.node if node.op_type == "Constant"}
        initializers = {init.name: init for init in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type != "Reshape":
                continue
            if node.input[1] in constants:
                tensor = constants[node.input[1]].attribute[0].t
            elif node.input[1] in initializers:
                tensor = initializers[node.input[1]]
            else:
                continue
            shape = numpy_helper.to_array(tensor).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0
                tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
        for value in (*model.graph.input, *model.graph.output):
            dims = value.type.tensor_type.shape.dim
            if dims:
                dims[0].dim_param = "batch"
    if spatial:
        for value in model.graph.input:
            dims = value.type.tensor_type.shape.dim
            for axis, name in zip(range(len(dims) - 2, len(dims)), ("height", "width"), strict=True):
                dims[axis].dim_param = name
        for value in model.graph.output:
            dims = value.type.tensor_type.shape.dim
            if len(dims) >= 2:
                dims[1].dim_param = f"{value.name}_rows"
    del model.graph.value_info[:]
    return model.SerializeToString()


def create_session(card: ModelCard, path: Path, config: RuntimeConfig) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = LOG_ERRORS_ONLY
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    fixed_batch, any_size = card.input.batch == "fixed", card.input.any_size
    model = dynamic_model(path, fixed_batch, any_size) if fixed_batch or any_size else str(path)
    providers = execution_providers(config)
    try:
        session = ort.InferenceSession(model, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable graphs
        raise ModelError(f"model '{card.name}' at {path} cannot be loaded: {exc}") from None
    if providers[0] != CPU and session.get_providers()[0] != CUDA:  # onnxruntime fell back by itself
        if config.provider == "cuda":
            raise ModelError(
                f"model '{card.name}': CUDA was asked for but the session runs on {session.get_providers()}"
            )
        LOG.warning("CUDA unusable, running on the CPU", extra={"model": card.name})
    names = {i.name for i in session.get_inputs()}
    if card.input.name not in names:
        raise ModelError(f"model '{card.name}': card input '{card.input.name}' not in the graph ({names})")
    return session
