"""Service configuration: embedded defaults, one TOML file, then GATEMATCH_<SECTION>_<KEY> environment overrides.

`gatematch serve` must start with nothing but defaults (loopback port, local store, default pack), so every
field has one. Containers and systemd units override single values through the environment without a file.
Relative paths in the file are resolved against the file's folder, so a config travels with its certificates.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatematch.errors import ConfigError
from gatematch.gallery_store import DATABASE_SCHEMES, DEFAULT_HORIZON, DEFAULT_RETENTION, RetentionPolicy
from gatematch.runtime import RuntimeConfig
from gatematch.tomlfile import read_toml

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ENV_PREFIX = "GATEMATCH_"
ENV_CONFIG = "GATEMATCH_CONFIG"


def _data_dir() -> Path:
    """Where the embedded defaults keep data; read when a config is made, not when this module is imported."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "gatematch"


def _in_data_dir(name: str) -> Any:
    return field(default_factory=lambda: str(_data_dir() / name))


def _positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:  # NaN too
            raise ConfigError(f"[{section}] {name} must be > 0, got {value}")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    max_message_bytes: int = 16 * 1024 * 1024
    workers: int = 0  # inference threads; 0 = one per core
    max_streams: int = 32  # camera streams, all clients together
    max_loads: int = 2  # gallery loads at once (each holds an upload and enrollment work)
    max_unary: int = 16  # unary calls in progress at once
    shutdown_grace_s: float = 5.0
    # plaintext on a non-loopback address needs this on purpose; it never switches authorization off
    allow_insecure_remote: bool = False
    reflection: bool = False  # gRPC server reflection (then for authenticated analysts and admins only)
    # A second, plaintext listener that serves grpc.health.v1 only (0 = none): for orchestrator probes that
    # cannot do mutual TLS (the kubelet's). It tells nothing but SERVING / NOT_SERVING.
    health_port: int = 0
    # per client (certificate or token): streams and loads open at once, and a request rate (token bucket)
    client_streams: int = 4
    client_rate: float = 50.0  # calls and stream opens per second, sustained
    client_burst: int = 100
    stream_idle_s: float = 30.0  # a camera stream that sends no frame this long is closed
    stream_max_s: float = 24 * 3600.0  # a camera stream is closed after this long (the camera reconnects)
    load_idle_s: float = 30.0  # a gallery load that sends nothing this long is refused, nothing written
    load_max_s: float = 900.0  # a gallery load that takes longer is refused, nothing written

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535 or not 0 <= self.health_port <= 65535:
            raise ConfigError(
                f"[server] port and health_port must be 0..65535, got {self.port}, {self.health_port}"
            )
        if self.workers < 0:
            raise ConfigError(f"[server] workers must be >= 0, got {self.workers}")
        _positive(
            "server",
            max_message_bytes=self.max_message_bytes,
            max_streams=self.max_streams,
            max_loads=self.max_loads,
            max_unary=self.max_unary,
            client_streams=self.client_streams,
            client_rate=self.client_rate,
            client_burst=self.client_burst,
            stream_idle_s=self.stream_idle_s,
            stream_max_s=self.stream_max_s,
            load_idle_s=self.load_idle_s,
            load_max_s=self.load_max_s,
        )

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass(frozen=True)
class StoreConfig:
    gallery_dir: str = _in_data_dir("galleries")  # the embedded store (SQLite + index files)
    url: str = (
        ""  # "postgresql://...": galleries in PostgreSQL, shared by replicas (gallery_dir is then unused)
    )
    model_dir: str = ""  # empty: the model store's own default (GATEMATCH_MODEL_DIR or the user cache)
    pack: str = "default"

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(DATABASE_SCHEMES):
            raise ConfigError(f"[store] url must start with {' or '.join(DATABASE_SCHEMES)} (or be empty)")

    @property
    def location(self) -> str:
        """Where the galleries are: the database URL, else the embedded store's folder."""
        return self.url or self.gallery_dir


@dataclass(frozen=True)
class BudgetConfig:
    frame_ms: float = 500.0
    encounter_ms: float = 2000.0  # TVS answers within 2 s per traveler
    reply_margin_ms: float = 10.0  # kept back from a gRPC deadline to send the answer in time

    def __post_init__(self) -> None:
        _positive("budgets", frame_ms=self.frame_ms, encounter_ms=self.encounter_ms)


@dataclass(frozen=True)
class MatchConfig:
    # Operating point (NIST FRVT paperless travel, = gatematch.gallery.DEFAULT_TARGET_FPIR); the cosine
    # threshold follows from calibration for each gallery's size.
    target_fpir: float = 0.003
    max_candidates: int = 5
    max_pixels: int = 3840 * 2160
    liveness: bool = False
    # The site's time zone (IANA name): a frame's flight date is the flight's scheduled date in it.
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not 0 < self.target_fpir < 1:
            raise ConfigError(f"[match] target_fpir must be in (0, 1), got {self.target_fpir}")
        _positive("match", max_candidates=self.max_candidates, max_pixels=self.max_pixels)
        self.zone()

    def zone(self) -> tzinfo:
        if self.timezone == "UTC":
            return UTC
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"[match] timezone {self.timezone!r} is not a time zone this system knows (e.g. Europe/Paris)"
            ) from None


@dataclass(frozen=True)
class VerifyConfig:
    """1:1 verification (MatchService.Verify): MATCH when the score's calibrated 1:1 FMR is at most this. 1e-3 is
    the figure border-control guidance sets for automated gates (Frontex best practice: FMR <= 0.001)."""

    target_fmr: float = 0.001
    budget_ms: float = 1000.0  # two analyses (the reference photo and the live frame), not one

    def __post_init__(self) -> None:
        if not 0 < self.target_fmr < 1:
            raise ConfigError(f"[verify] target_fmr must be in (0, 1), got {self.target_fmr}")
        _positive("verify", budget_ms=self.budget_ms)


@dataclass(frozen=True)
class EncounterConfig:
    """How faces are linked into encounters and how an encounter spends its false-match budget (encounter.py)."""

    min_iou: float = 0.3  # a face continues a track if its box overlaps this much ...
    max_centre_shift: float = 0.5  # ... or its centre moved less than this many box widths ...
    # ... and its template is at least as close to the track's as a stranger's is with this 1:1 FMR
    same_person_fmr: float = 0.01
    # Chosen by `gatematch bench encounters` on celeba_wild (DESIGN.md): a first search on the first usable
    # frame with a fifth of the false-match budget (a clear face is decided at once), then one on the mean of
    # five frames with the rest.
    fuse_best: int = 5  # templates of this many best-quality frames are averaged
    decision_frames: tuple[int, ...] = (1, 5)  # usable frames seen when each search is made
    fpir_shares: tuple[float, ...] = (0.2, 0.8)  # share of the target FPIR each of those searches may spend
    lost_after_ms: float = 1000.0  # a track unseen this long is over

    def __post_init__(self) -> None:
        _positive("encounter", fuse_best=self.fuse_best, lost_after_ms=self.lost_after_ms)
        if not 0 < self.same_person_fmr < 1:
            raise ConfigError(f"[encounter] same_person_fmr must be in (0, 1), got {self.same_person_fmr}")
        frames, shares = self.decision_frames, self.fpir_shares
        if not frames or len(frames) != len(shares):
            raise ConfigError(
                f"[encounter] decision_frames {list(frames)} and fpir_shares {list(shares)} need one share "
                "per checkpoint"
            )
        if frames[0] < 1 or any(b <= a for a, b in itertools.pairwise(frames)):
            raise ConfigError(f"[encounter] decision_frames must increase from >= 1, got {list(frames)}")
        if any(share <= 0 for share in shares) or sum(shares) > 1 + 1e-9:
            raise ConfigError(
                f"[encounter] fpir_shares must be > 0 and add up to at most 1 (the whole target), got {list(shares)}"
            )


@dataclass(frozen=True)
class FocusConfig:
    """Where a camera stream spends model time (service/focus.py); DESIGN.md gives the measurements."""

    enabled: bool = True  # false: every frame gets a whole-frame detection and every face every stage
    scan_ms: float = 1000.0  # the whole frame is searched for new faces at least this often ...
    scan_coarse: float = 0.5  # ... at this fraction of the detector's scale, what it finds again in a window
    margin: float = 1.0  # a followed face is looked for in its box grown by this many widths on each side ...
    max_margin_px: float = (
        96.0  # ... but by at most this many pixels of the detector's input (3 of YuNet's cells)
    )
    max_window_share: float = 0.6  # a window over more of the frame than this: the whole frame instead
    recheck_frames: int = 5  # a decided traveler's face is embedded again at least every this many frames ...
    recheck_below: float = (
        0.85  # ... and when its look correlates less than this with its last embedded frame
    )
    # 1: a frame may go unanalysed while every encounter is decided and every face in view still; 0: never
    pass_over: int = 1

    def __post_init__(self) -> None:
        _positive(
            "focus",
            scan_ms=self.scan_ms,
            recheck_frames=self.recheck_frames,
            max_margin_px=self.max_margin_px,
        )
        if not 0 < self.scan_coarse <= 1:
            raise ConfigError(f"[focus] scan_coarse must be in (0, 1], got {self.scan_coarse}")
        if self.margin < 0 or not 0 < self.max_window_share <= 1 or not -1 <= self.recheck_below <= 1:
            raise ConfigError(
                "[focus] margin must be >= 0, max_window_share in (0, 1] and recheck_below in [-1, 1]"
            )
        if self.pass_over not in (0, 1):  # two in a row were never measured (and never fit at 5 fps)
            raise ConfigError(f"[focus] pass_over must be 0 or 1, got {self.pass_over}")


@dataclass(frozen=True)
class InferenceConfig:
    """Where the models run (gatematch.runtime): the CPU, or onnxruntime's CUDA provider with frames of several
    cameras batched into one run. On a GPU, raise `[server] workers` so that several frames are in flight."""

    provider: str = "cpu"  # cpu | cuda (refused at start without a CUDA provider) | auto (CUDA when present)
    device_id: int = 0
    batch_max: int = 1  # > 1: concurrent frames' inputs of one shape run together (1: off, the CPU default)
    batch_wait_ms: float = 2.0  # how long the first of a batch waits for batch-mates

    def __post_init__(self) -> None:
        try:
            self.runtime(1)  # the runtime's own checks, at config time
        except ConfigError as exc:
            raise ConfigError(f"[inference] {exc}") from None

    def runtime(self, intra_op_threads: int) -> RuntimeConfig:
        return RuntimeConfig(
            intra_op_threads=intra_op_threads,
            allow_spinning=False,
            provider=self.provider,
            device_id=self.device_id,
            batch_max=self.batch_max,
            batch_wait_ms=self.batch_wait_ms,
        )


@dataclass(frozen=True)
class TLSConfig:
    cert_file: str = ""  # server certificate chain (PEM); empty = plaintext
    key_file: str = ""
    client_ca_file: str = ""  # set: mutual TLS, clients must present a certificate signed by this CA
    crl_file: str = (
        ""  # certificates this CA revoked (PEM or DER CRL, signed by the client CA); reloaded on SIGHUP
    )


@dataclass(frozen=True)
class AuthConfig:
    policy_file: str = ""  # empty = no authorization (only allowed on loopback without TLS)
    # The L7 proxies in front of the service (their own addresses, or a network holding proxies only): a call
    # from one is attributed to the caller its x-forwarded-for names, so that a lockout (AC-7) and the audit
    # trail are of that caller and not of the proxy that every caller shares. A caller inside a listed network
    # could name anyone: list no network that holds callers (README, "Running securely").
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.proxy_networks()

    def proxy_networks(self) -> tuple[IPNetwork, ...]:
        networks = []
        for entry in filter(None, (e.strip() for e in self.trusted_proxies)):
            try:
                network = ipaddress.ip_network(entry)  # strict: 10.0.0.5/8 is a typo, not all of 10/8
            except ValueError:
                raise ConfigError(
                    f"[auth] trusted_proxies: {entry!r} is not an IP address or network (e.g. 10.0.12.7 or "
                    "10.0.12.0/28)"
                ) from None
            if network.prefixlen == 0:
                raise ConfigError(
                    f"[auth] trusted_proxies: {entry!r} would trust every caller's x-forwarded-for"
                )
            networks.append(network)
        return tuple(networks)


@dataclass(frozen=True)
class KeysConfig:
    """Template keys (gatematch.keyfile): the key file, created beside the embedded store on its first use.
    GATEMATCH_TEMPLATE_KEY, when set, overrides it with one key."""

    file: str = _in_data_dir("template-keys.json")


@dataclass(frozen=True)
class RetentionConfig:
    """How long galleries are kept after departure, at most, and how far ahead of departure they may be built
    (gatematch.gallery_store.RetentionPolicy). A Load may ask for a shorter or longer retention, never longer
    than max_hours."""

    default_hours: float = DEFAULT_RETENTION.total_seconds() / 3600
    max_hours: float = DEFAULT_RETENTION.total_seconds() / 3600
    max_days_ahead: float = DEFAULT_HORIZON.days
    purge_every_s: float = 60.0  # the timer's period: an expired gallery's data outlives it by at most this

    def __post_init__(self) -> None:
        _positive(
            "retention",
            default_hours=self.default_hours,
            max_hours=self.max_hours,
            max_days_ahead=self.max_days_ahead,
            purge_every_s=self.purge_every_s,
        )
        if self.default_hours > self.max_hours:
            raise ConfigError(
                f"[retention] default_hours {self.default_hours:g} is over max_hours {self.max_hours:g}"
            )
        if max(self.max_hours / 24, self.max_days_ahead) > 3660:
            raise ConfigError("[retention] max_hours and max_days_ahead must stay within ten years")

    def policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            timedelta(hours=self.default_hours),
            timedelta(hours=self.max_hours),
            timedelta(days=self.max_days_ahead),
        )


AUDIT_SINKS = ("file", "store")
AUDIT_ROTATE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class AuditConfig:
    path: str = _in_data_dir("audit.jsonl")  # the file sink, and the fallback of the store sink
    sink: str = "file"  # "store": an append-only table in the gallery store's PostgreSQL database
    rotate_bytes: int = AUDIT_ROTATE_BYTES  # the file is continued in a new one past this size (chain kept)

    def __post_init__(self) -> None:
        if self.sink not in AUDIT_SINKS:
            raise ConfigError(f"[audit] sink must be one of {', '.join(AUDIT_SINKS)}, got {self.sink!r}")
        _positive("audit", rotate_bytes=self.rotate_bytes)


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 0  # Prometheus scrape port; 0 = off


@dataclass(frozen=True)
class ServiceConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    budgets: BudgetConfig = field(default_factory=BudgetConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    encounter: EncounterConfig = field(default_factory=EncounterConfig)
    focus: FocusConfig = field(default_factory=FocusConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    def __post_init__(self) -> None:
        if self.audit.sink == "store" and not self.store.url:
            raise ConfigError('[audit] sink = "store" needs the galleries in PostgreSQL ([store] url)')


_PATH_SUFFIXES = ("file", "_dir", "path")  # [tls] cert_file, [keys] file, [audit] path ...


def _convert(section: str, key: str, kind: type, value: Any) -> Any:
    """A TOML or environment value as the field's type; environment values arrive as strings."""
    where = f"[{section}] {key}"
    if typing.get_origin(kind) is tuple:  # a TOML array, or comma-separated in the environment
        (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_convert(section, key, item, v.strip() if isinstance(v, str) else v) for v in items)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.strip().lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ConfigError(f"{where} must be {kind.__name__}, got {value!r}")
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be {kind.__name__}, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _apply(section_obj: Any, section: str, values: Mapping[str, Any], base: Path | None) -> Any:
    hints = typing.get_type_hints(type(section_obj))
    known = {f.name for f in fields(section_obj)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown setting [{section}] {key}; known: {', '.join(sorted(known))}")
        converted = _convert(section, key, hints[key], value)
        if base is not None and converted and key.endswith(_PATH_SUFFIXES):
            # The folder resolved, the file's own link kept: a Kubernetes volume swaps in an updated file by
            # switching a link and deleting the old folder, so a file resolved at start would name a deleted one.
            path = base / Path(converted).expanduser()
            try:
                converted = str(path.parent.resolve() / path.name)
            except (OSError, RuntimeError) as exc:  # a link loop (RuntimeError before Python 3.13)
                raise ConfigError(f"[{section}] {key}: {path} cannot be resolved: {exc}") from None
        changes[key] = converted
    return replace(section_obj, **changes)


def load_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> ServiceConfig:
    """Defaults, then the TOML file (argument, else $GATEMATCH_CONFIG, else none), then environment overrides."""
    env = os.environ if env is None else env
    path = path or env.get(ENV_CONFIG) or None
    sections = {f.name: f for f in fields(ServiceConfig)}
    parts = {name: getattr(ServiceConfig(), name) for name in sections}
    if path is not None:
        path = Path(path)
        document = read_toml(path, ConfigError, "config")
        for name, values in document.items():
            if name not in sections or not isinstance(values, dict):
                raise ConfigError(f"{path}: unknown section [{name}]; known: {', '.join(sections)}")
            parts[name] = _apply(parts[name], name, values, path.parent)
    for name in sections:
        prefix = f"{ENV_PREFIX}{name.upper()}_"
        overrides = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
        if overrides:
            parts[name] = _apply(parts[name], name, overrides, Path.cwd())
    return ServiceConfig(**parts)
