"""A tiny real accuracy benchmark end to end through `gatematch bench accuracy`: celeb5 photos plus a few AT&T
identities (re-encoded as JPEG under LFW-style names so a pairs file can point at them), two packs, labels, and
a rerun that must come from the cache with identical numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gatematch.benchmarks import metrics
from gatematch.benchmarks.dataset import scan_dataset
from gatematch.benchmarks.embeddings import embed_dataset
from gatematch.benchmarks.protocols import verification_scores
from gatematch.calibration import CalibrationTable
from gatematch.cards import get_pack
from gatematch.cli.main import main
from gatematch.facepipeline import FacePipeline
from support.data import need

PACKS = ("default", "accurate")
CELEB5_PER_IDENTITY = 8
ORL = ("s1", "s2", "s3", "s4", "s5")
ORL_PER_IDENTITY = 5
GALLERY, DEPARTURES = 6, 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dataset_root(faces_dir: Path, tmp_path_factory) -> Path:
    celeb5 = need(faces_dir / "celeb5", "celeb5 photos")
    orl = need(faces_dir / "att_orl", "att_orl photos")
    root = tmp_path_factory.mktemp("bench") / "mini"
    sources = [(p.name, sorted(p.iterdir())[:CELEB5_PER_IDENTITY]) for p in sorted(celeb5.iterdir())]
    sources += [(name, sorted((orl / name).iterdir())[:ORL_PER_IDENTITY]) for name in ORL]
    for name, photos in sources:
        (root / name).mkdir(parents=True)
        for number, photo in enumerate(photos, start=1):
            image = cv2.imread(str(photo))
            cv2.imwrite(str(root / name / f"{name}_{number:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return root


@pytest.fixture(scope="module")
def pairs_file(dataset_root: Path) -> Path:
    """Two folds of 4 matched and 4 mismatched pairs each, LFW View-2 format."""
    names = sorted(p.name for p in dataset_root.iterdir())
    lines = ["2 4"]
    for fold in range(2):
        lines += [f"{names[fold * 4 + i]} 1 {2 + fold}" for i in range(4)]
        lines += [f"{names[i]} {1 + fold} {names[-1 - i]} 2" for i in range(4)]
    path = dataset_root.parent / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def labels_file(dataset_root: Path) -> Path:
    path = dataset_root.parent / "labels.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identity", "source", "photo"])
        for person in sorted(p.name for p in dataset_root.iterdir()):
            orl = person in ORL
            writer.writerow([person, "att_orl" if orl else "celeb5", "grayscale" if orl else ""])
    return path


def bench(root: Path, out: Path, cache: Path, model_dir: Path, *extra: str) -> int:
    argv = ["bench", "accuracy", str(root), "--gallery-size", str(GALLERY), "--departures", str(DEPARTURES)]
    argv += ["--seed", "7", "--out", str(out), "--cache", str(cache)]
    argv += ["--model-dir", str(model_dir), "--quiet"]
    return main([*argv, *extra])


@pytest.fixture(scope="module")
def run(dataset_root, pairs_file, labels_file, model_dir, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("bench-out")
    out, cache = base / "first", base / "cache"
    extra = ["--pack", PACKS[0], "--pack", PACKS[1], "--pairs", str(pairs_file), "--labels", str(labels_file)]
    assert bench(dataset_root, out, cache, model_dir, *extra) == 0
    caches = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    assert bench(dataset_root, base / "second", cache, model_dir, *extra) == 0
    return {
        "out": out,
        "cache": cache,
        "caches_before": caches,
        "report": json.loads((out / "report.json").read_text()),
        "rerun": json.loads((base / "second" / "report.json").read_text()),
    }


def test_report_names_the_data_set_models_seed_and_command(run, dataset_root):
    report = run["report"]
    assert report["dataset"]["fingerprint"] == scan_dataset(dataset_root).fingerprint
    assert report["dataset"]["identities"] == 10 and report["seed"] == 7
    assert (
        report["command"].startswith("gatematch bench accuracy ") and "--pack accurate" in report["command"]
    )
    assert list(report["packs"]) == list(PACKS)
    for name, pack in report["packs"].items():
        assert pack["models"] == get_pack(name).model_hashes
        assert pack["embedder"]["sha256"] == get_pack(name).embedder.sha256
    assert set(report["conventions"]) >= {"fta", "fte", "verification", "identification"}


def test_verification_rates_are_sane_ordered_and_match_the_scores(run, dataset_root, model_store):
    dataset = scan_dataset(dataset_root)
    for name, pack in run["report"]["packs"].items():
        v = pack["verification"]
        points = v["fnmr_at_fmr"]
        assert [p["target"] for p in points] == [1e-2, 1e-3, 1e-4]
        thresholds = [p["threshold"] for p in points]
        assert thresholds == sorted(thresholds), "a lower FMR target needs a higher threshold"
        for p in points:
            assert 0 <= p["fnmr"] <= 1 and 0 <= p["fmr"] <= 1
            assert p["fmr"] <= p["target"] or not p["supported"]
            assert p["supported"] == (p["target"] * v["impostor_comparisons"] >= 1)
            assert p["generalized_fnmr"] >= p["fnmr"] and p["generalized_fmr"] <= p["fmr"]
        assert 0 <= v["eer"] <= 0.5
        # the reported numbers are those of the cached scores (cache hit: no model run needed to recheck)
        embedding = embed_dataset(
            dataset, FacePipeline.from_pack(name, model_store), run["cache"], progress=False
        )
        assert embedding.new_images == 0 and embedding.stored_images == len(dataset.samples)
        embedded = embedding.embedded
        scores = verification_scores(embedded)
        assert v["genuine_comparisons"] == scores.genuine.size
        fmr, fnmr = metrics.fmr_fnmr(scores.genuine, scores.impostor, np.array(thresholds))
        assert fnmr.tolist() == [p["fnmr"] for p in points] and fmr.tolist() == [p["fmr"] for p in points]
        assert pack["fta_rate"] == pytest.approx(1 - embedded.acquired.mean())
        lfw = v["lfw_accuracy"]
        assert lfw["pairs"] == 16 and lfw["folds"] == 2 and 0.5 <= lfw["accuracy"] <= 1 and lfw["std"] >= 0


def test_identification_counts_and_rates(run):
    for pack in run["report"]["packs"].values():
        ident = pack["identification"]
        assert ident["mated_searches"] == GALLERY * DEPARTURES
        assert ident["nonmated_searches"] == (10 - GALLERY) * DEPARTURES
        points = ident["fnir_at_fpir"]
        assert [p["target"] for p in points] == [0.003, 0.01]
        assert points[0]["threshold"] >= points[1]["threshold"] and points[0]["fnir"] >= points[1]["fnir"]
        for p in points:
            spread = p["fnir_spread"]
            assert 0 <= spread["min"] <= spread["median"] <= spread["max"] <= 1 and 0 <= p["fnir"] <= 1
            assert not p["supported"]  # 8 non-mated searches cannot resolve FPIR 0.01
        assert 0 <= ident["rank1"] <= 1 and ident["rank1_spread"]["min"] <= ident["rank1"]
        assert ident["rank1"] <= ident["rank1_spread"]["max"]
        assert 0 <= pack["fta_rate"] <= 1 and 0 <= pack["fte_rate"] <= 1


def test_subgroups_cover_every_identity_and_image(run):
    for pack in run["report"]["packs"].values():
        groups = pack["subgroups"]
        assert set(groups) == {"source", "photo"}
        assert set(groups["photo"]) == {"grayscale", "unknown"}
        source = groups["source"]
        assert source["att_orl"]["identities"] == 5 and source["celeb5"]["identities"] == 5
        assert sum(g["images"] for g in source.values()) == pack["images"]
        for g in source.values():
            assert len(g["fnmr"]) == 3 and all(0 <= r <= 1 for r in g["fnmr"] + g["fmr"])
            assert g["rank1"] is None or 0 <= g["rank1"] <= 1


def test_calibration_tables_and_plots_are_written(run):
    out = run["out"]
    for pack in run["report"]["packs"].values():
        table = CalibrationTable.load(out / pack["calibration_file"])
        assert pack["calibration_file"] == f"{pack['embedder']['name']}.json"
        assert table.embedder_sha256 == pack["embedder"]["sha256"]
        assert table.n_impostor == pack["verification"]["impostor_comparisons"]
    pngs = ["det.png", "flight_det.png", *(f"scores_{name}.png" for name in PACKS)]
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 300 and image.shape[1] > 400
    markdown = (out / "report.md").read_text()
    assert "## 1:1 verification" in markdown and "| accurate |" in markdown and "att_orl" in markdown


def test_rerun_uses_the_cache_and_gives_identical_numbers(run):
    assert {p: p.stat().st_mtime_ns for p in run["cache"].rglob("*")} == run["caches_before"]
    for name in PACKS:
        first, again = dict(run["report"]["packs"][name]), dict(run["rerun"]["packs"][name])
        assert first.pop("embedding")["new_images"] == first["images"]
        assert again.pop("embedding") == {
            "engine": "local",
            "new_images": 0,
            "stored_images": first["images"],
            "images_per_s": None,
        }
        first.pop("embedding_s"), again.pop("embedding_s")
        assert first == again


def test_impossible_protocols_and_bad_labels_fail_before_embedding(dataset_root, tmp_path, model_dir, capsys):
    assert main(["bench", "accuracy", str(dataset_root), "--gallery-size", "10", "--out", str(tmp_path)]) == 2
    assert "gallery size 10" in capsys.readouterr().err
    labels = tmp_path / "labels.csv"
    labels.write_text("identity,sex\nben_afflek,m\n")
    code = bench(dataset_root, tmp_path / "o", tmp_path / "c", model_dir, "--labels", str(labels))
    assert code == 2 and "have no row" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_unusable_outputs_and_protocols_fail_before_embedding(dataset_root, tmp_path, model_dir, capsys):
    """--out/--cache pointing at a file, a pairs file naming absent images, a single identity: each is a
    one-line exit 2 before any model runs (not a traceback after minutes of embedding)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cache = tmp_path / "cache"
    assert bench(dataset_root, blocker, cache, model_dir) == 2
    assert "--out" in capsys.readouterr().err
    assert bench(dataset_root, tmp_path / "out", blocker, model_dir) == 2
    assert "--cache" in capsys.readouterr().err
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1 1\nnobody 1 2\nnobody 1 somebody 1\n")
    assert bench(dataset_root, tmp_path / "out", cache, model_dir, "--pairs", str(pairs)) == 2
    assert "nobody/nobody_0001.jpg" in capsys.readouterr().err
    assert not cache.exists()
    solo = tmp_path / "solo" / "only_one"
    solo.mkdir(parents=True)
    for photo in sorted((dataset_root / "s1").iterdir())[:2]:
        (solo / photo.name).write_bytes(photo.read_bytes())
    assert main(["bench", "accuracy", str(solo.parent), "--gallery-size", "1", "--out", str(tmp_path)]) == 2
    assert "at least 2 identities" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lfw_style_root(faces_dir: Path, tmp_path_factory) -> Path:
    """An LFW-style set from real photos (symlinks under LFW names): the five celeb5 people with 6 photos
    each, and six AT&T people reduced to a single photo."""
    celeb5 = need(faces_dir / "celeb5", "celeb5 photos")
    orl = need(faces_dir / "att_orl", "att_orl photos")
    root = tmp_path_factory.mktemp("lfw-style") / "set"
    sources = [(p.name, sorted(p.iterdir())[:6]) for p in sorted(celeb5.iterdir())]
    sources += [(f"s{k}", [orl / f"s{k}" / "1.png"]) for k in range(1, 7)]
    for name, photos in sources:
        (root / name).mkdir(parents=True)
        for number, photo in enumerate(photos, start=1):
            (root / name / f"{name}_{number:04d}.jpg").symlink_to(
                photo
            )  # LFW names; decoding reads the bytes
    return root


def test_single_image_identities_are_searched_as_non_mated_probes(
    lfw_style_root, tmp_path, model_dir, capsys
):
    """Issue 9 item 7: a set where some identities have one photo runs; they are never enrolled and are
    non-mated searches in every departure, and impostors in 1:1."""
    assert bench(lfw_style_root, tmp_path / "out", tmp_path / "cache", model_dir, "--gallery-size", "4") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    pack = report["packs"]["default"]
    ident, verification = pack["identification"], pack["verification"]
    assert report["dataset"]["identities"] == 11 and ident["single_image_identities"] == 6
    assert ident["mated_searches"] == 4 * DEPARTURES  # only the five celeb5 people can be enrolled
    assert ident["nonmated_searches"] == (11 - 4) * DEPARTURES  # one left-out celeb5 person + the six singles
    acquired = round(pack["images"] * (1 - pack["fta_rate"]))
    assert verification["genuine_comparisons"] <= 5 * 15  # singles have no genuine pair
    assert (
        verification["genuine_comparisons"] + verification["impostor_population"]
        == acquired * (acquired - 1) // 2
    )
    assert "6 identities have a single image" in (tmp_path / "out" / "report.md").read_text()
    capsys.readouterr()
    assert bench(lfw_style_root, tmp_path / "o2", tmp_path / "cache", model_dir, "--gallery-size", "6") == 2
    assert "gallery size 6 must be between 1 and 5" in capsys.readouterr().err


def test_an_lfw_pairs_file_can_name_single_image_identities(lfw_style_root, tmp_path, model_dir):
    pairs = tmp_path / "pairs.txt"
    people = sorted(p.name for p in lfw_style_root.iterdir() if not p.name.startswith("s"))
    lines = ["2 2"]
    for fold in range(2):
        lines += [f"{people[fold * 2 + i]} 1 {2 + i}" for i in range(2)]
        lines += [f"{people[i]} {1 + fold} s{1 + i + 2 * fold} 1" for i in range(2)]
    pairs.write_text("\n".join(lines) + "\n")
    code = bench(
        lfw_style_root,
        tmp_path / "out",
        tmp_path / "cache",
        model_dir,
        "--gallery-size",
        "4",
        "--pairs",
        str(pairs),
    )
    assert code == 0
    lfw = json.loads((tmp_path / "out" / "report.json").read_text())["packs"]["default"]["verification"][
        "lfw_accuracy"
    ]
    assert lfw["pairs"] == 8 and lfw["folds"] == 2 and 0.5 <= lfw["accuracy"] <= 1
