"""Model cards and packs: the declarative contract of every model (file, hash, license, preprocessing).

Preprocessing is read from the card, never guessed from the graph; a card that is malformed fails at load with
the card's name and the field at fault, not later inside a model wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gatematch.errors import CardError, PackError
from gatematch.tomlfile import read_toml

TASKS = ("detector", "embedder", "quality", "liveness")


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes this model's input tensor: (pixel - mean) / std in 0..255 units, in `color` order."""

    name: str
    layout: str  # "NCHW" or "NHWC"
    color: str  # "BGR" or "RGB"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: tuple[int, int] | None = None  # (width, height); None = dynamic
    size_multiple: int = 1  # dynamic inputs: width and height must be multiples of this
    max_side: int = 0  # dynamic inputs: frames are scaled down so their long side fits
    batch: str = "dynamic"  # "fixed" when the file pins batch 1
    # A fixed `size` the graph does not depend on (convolutions, Reshape to -1, Resize by scales): the file's
    # declared size is what a whole frame is letterboxed into, and a window of a frame may run at its own size
    # (a multiple of `size_multiple`); the input's height and width are made symbolic at load.
    any_size: bool = False


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    task: str
    file: str
    sha256: str
    license: str
    commercial_use: bool
    upstream: str
    url: str
    description: str
    input: InputSpec
    outputs: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)  # the task's own section ([detector], [embedder]...)
    # [derived]: a model made here from another one (gatematch.quantize), not fetched: from, calibration...
    derived: dict[str, Any] = field(default_factory=dict)

    @property
    def license_note(self) -> str:
        return self.license if self.commercial_use else f"{self.license} (NOT for commercial use)"


@dataclass(frozen=True)
class Pack:
    name: str
    description: str
    detector: ModelCard
    embedder: ModelCard | None = None
    quality: ModelCard | None = None
    liveness: tuple[ModelCard, ...] = ()

    @property
    def models(self) -> tuple[ModelCard, ...]:
        return tuple(c for c in (self.detector, self.embedder, self.quality, *self.liveness) if c is not None)

    @property
    def commercial_use(self) -> bool:
        return all(card.commercial_use for card in self.models)

    @property
    def model_hashes(self) -> dict[str, str]:
        return {card.name: card.sha256 for card in self.models}


def _require(table: dict, key: str, kind: type, where: str):
    if key not in table:
        raise CardError(f"{where}: missing field '{key}'")
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise CardError(f"{where}: field '{key}' must be {kind.__name__}, got {value!r}")
    return value


def _flag(table: dict, key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise CardError(f"{where}: field '{key}' must be true or false, got {value!r}")
    return value


def _triple(table: dict, key: str, where: str) -> tuple[float, float, float]:
    value = _require(table, key, list, where)
    if len(value) != 3 or not all(isinstance(v, int | float) for v in value):
        raise CardError(f"{where}: field '{key}' must be three numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def parse_card(data: dict[str, Any], source: str) -> ModelCard:
    where = f"model card {source}"
    task = _require(data, "task", str, where)
    if task not in TASKS:
        raise CardError(f"{where}: task must be one of {', '.join(TASKS)}, got {task!r}")
    sha = _require(data, "sha256", str, where).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise CardError(f"{where}: sha256 must be 64 hex digits")
    raw_input = _require(data, "input", dict, where)
    size = raw_input.get("size")
    if size is not None and (len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)):
        raise CardError(f"{where}: input.size must be [width, height], got {size!r}")
    layout = _require(raw_input, "layout", str, where)
    color = _require(raw_input, "color", str, where)
    if layout not in ("NCHW", "NHWC") or color not in ("BGR", "RGB"):
        raise CardError(f"{where}: input layout must be NCHW/NHWC and color BGR/RGB")
    std = _triple(raw_input, "std", where)
    if any(s == 0 for s in std):
        raise CardError(f"{where}: input.std must not contain 0")
    spec = InputSpec(
        name=_require(raw_input, "name", str, where),
        layout=layout,
        color=color,
        mean=_triple(raw_input, "mean", where),
        std=std,
        size=tuple(size) if size else None,
        size_multiple=int(raw_input.get("size_multiple", 1)),
        max_side=int(raw_input.get("max_side", 0)),
        batch=str(raw_input.get("batch", "dynamic")),
        any_size=_flag(raw_input, "any_size", where),
    )
    if (spec.size is None or spec.any_size) and spec.size_multiple < 1:
        raise CardError(f"{where}: a dynamic input needs size_multiple >= 1")
    if spec.any_size and (spec.size is None or spec.layout != "NCHW"):
        raise CardError(f"{where}: input.any_size is for a fixed NCHW size the graph does not depend on")
    outputs = data.get("outputs", {}).get("names", [])
    return ModelCard(
        name=_require(data, "name", str, where),
        family=_require(data, "family", str, where),
        task=task,
        file=_require(data, "file", str, where),
        sha256=sha,
        license=_require(data, "license", str, where),
        commercial_use=_require(data, "commercial_use", bool, where),
        upstream=str(data.get("upstream", "")),
        url=str(data.get("url", "")),
        description=str(data.get("description", "")),
        input=spec,
        outputs=tuple(outputs),
        params=dict(data.get(task, {})),
        derived=dict(data.get("derived", {})),
    )


def _models_dir() -> Path:
    return Path(str(resources.files("gatematch.models")))


def load_cards(directory: Path | None = None) -> dict[str, ModelCard]:
    """Every card in `directory` (default: the cards shipped in `models/cards`), by name."""
    directory = directory or _models_dir() / "cards"
    cards: dict[str, ModelCard] = {}
    for path in sorted(directory.glob("*.toml")):
        data = read_toml(path, CardError, "model card")
        card = parse_card(data, path.name)
        if card.name in cards:
            raise CardError(f"model card {path.name}: name '{card.name}' is used twice")
        cards[card.name] = card
    return cards


def build_pack(name: str, spec: dict[str, Any], cards: dict[str, ModelCard]) -> Pack:
    """Resolve a pack definition against the cards, refusing combinations that cannot work."""

    def card_for(key: str, task: str) -> ModelCard:
        model = spec[key]
        if model not in cards:
            raise PackError(f"pack '{name}': {key} '{model}' has no model card")
        card = cards[model]
        if card.task != task:
            raise PackError(f"pack '{name}': '{model}' is a {card.task}, not a {task}")
        return card

    if "detector" not in spec:
        raise PackError(f"pack '{name}': a pack needs a detector")
    detector = card_for("detector", "detector")
    embedder = card_for("embedder", "embedder") if spec.get("embedder") else None
    if embedder is not None and not detector.params.get("landmarks", False):
        raise PackError(
            f"pack '{name}': detector '{detector.name}' gives no landmarks, so faces cannot be aligned for "
            f"embedder '{embedder.name}'; it is usable for detection only"
        )
    quality = card_for("quality", "quality") if spec.get("quality") else None
    liveness = []
    for model in spec.get("liveness", []):
        if model not in cards or cards[model].task != "liveness":
            raise PackError(f"pack '{name}': liveness model '{model}' has no liveness card")
        liveness.append(cards[model])
    return Pack(name, str(spec.get("description", "")), detector, embedder, quality, tuple(liveness))


def load_packs(path: Path | None = None, cards: dict[str, ModelCard] | None = None) -> dict[str, Pack]:
    path = path or _models_dir() / "packs.toml"
    cards = cards if cards is not None else load_cards()
    data = read_toml(path, CardError, "packs file")
    return {name: build_pack(name, spec, cards) for name, spec in data.items()}


def get_pack(name: str) -> Pack:
    packs = load_packs()
    if name not in packs:
        raise PackError(f"unknown pack '{name}'; known packs: {', '.join(sorted(packs))}")
    return packs[name]
