"""onnxruntime sessions: created once per model, shared by every thread, with explicit thread counts.

Several sessions on a two-core gate box must not each spawn a thread per core and fight; the counts are
set here, in one place, from `RuntimeConfig`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx import numpy_helper

from gatematch.cards import ModelCard
from gatematch.errors import ModelError

LOG_ERRORS_ONLY = 3  # per session: UltraFace's initializer-as-input warning is harmless noise


@dataclass(frozen=True)
class RuntimeConfig:
    intra_op_threads: int = 0  # 0 = one per core
    allow_spinning: bool = (
        True  # spinning trades idle CPU for latency; turn off when many workers share cores
    )
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    @property
    def threads(self) -> int:
        return self.intra_op_threads or os.cpu_count() or 1


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
    try:
        session = ort.InferenceSession(model, options, providers=list(config.providers))
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable graphs
        raise ModelError(f"model '{card.name}' at {path} cannot be loaded: {exc}") from None
    names = {i.name for i in session.get_inputs()}
    if card.input.name not in names:
        raise ModelError(f"model '{card.name}': card input '{card.input.name}' not in the graph ({names})")
    return session
