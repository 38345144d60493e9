"""`gatematch detect` / `compare` as an operator runs them: real process, JSON output, exit 2 on bad input."""

from __future__ import annotations

import functools
import json

import pytest

from support.cli import run_gatematch


@pytest.fixture(scope="module")
def run(model_dir):
    return functools.partial(run_gatematch, model_dir=model_dir)


def test_detect_json(run, faces_dir):
    photo = faces_dir / "examples6" / "obama" / "obama.jpg"
    result = run("detect", str(photo), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    faces = data["results"][0]["faces"]
    assert len(faces) == 1 and len(faces[0]["landmarks"]) == 5
    assert faces[0]["quality"]["passed"] is True


def test_compare_same_and_different(run, faces_dir):
    obama = faces_dir / "examples6" / "obama"
    same = json.loads(run("compare", str(obama / "obama.jpg"), str(obama / "obama2.jpg"), "--json").stdout)
    assert same["same_person"] is True and same["score"] >= same["threshold"]
    biden = faces_dir / "examples6" / "biden" / "biden.jpg"
    other = run("compare", str(obama / "obama.jpg"), str(biden), "--json", "--pack", "accurate")
    assert other.returncode == 0, other.stderr
    different = json.loads(other.stdout)
    assert different["same_person"] is False and different["pack"] == "accurate"
    assert set(different["faces"]) == {str(obama / "obama.jpg"), str(biden)}


def _png_photo() -> bytes:
    import cv2
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    return cv2.imencode(".png", noise)[1].tobytes()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.jpg", "cannot read image"),
        (lambda tmp: (tmp / "corrupt.jpg", (tmp / "corrupt.jpg").write_bytes(b"\xff\xd8garbage"))[0], "JPEG"),
        (lambda tmp: (tmp / "empty.png", (tmp / "empty.png").write_bytes(b""))[0], "empty"),
        (
            lambda tmp: (tmp / "cut.png", (tmp / "cut.png").write_bytes(_png_photo()[:-5000]))[0],
            "truncated PNG",
        ),
    ],
)
def test_bad_input_exit_2_one_line(run, tmp_path, faces_dir, make, message):
    path = make(tmp_path)
    for args in (
        ("detect", str(path)),
        ("compare", str(path), str(faces_dir / "examples6" / "biden" / "biden.jpg")),
    ):
        result = run(*args)
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_no_face_and_unknown_pack(run, tmp_path, faces_dir):
    import cv2
    import numpy as np

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 90, np.uint8))
    result = run("compare", str(blank), str(faces_dir / "examples6" / "biden" / "biden.jpg"))
    assert result.returncode == 2 and "no face" in result.stderr
    result = run("detect", str(blank), "--pack", "nope")
    assert result.returncode == 2 and "unknown pack" in result.stderr


@pytest.mark.parametrize("threshold", ["5", "-1.5", "nan"])
def test_compare_threshold_outside_cosine_range_is_refused(run, faces_dir, threshold):
    photo = str(faces_dir / "examples6" / "obama" / "obama.jpg")
    result = run("compare", photo, photo, "--threshold", threshold)
    assert result.returncode == 2 and "threshold" in result.stderr
    assert "Traceback" not in result.stderr
