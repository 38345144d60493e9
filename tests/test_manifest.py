"""Flight manifests: CSV and JSON mean the same thing; every malformed input names where it went wrong."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gatematch.errors import ManifestError
from gatematch.gallery_tools.manifest import load_manifest

HEADER = "flight_id,departure,traveler_id,photos,document_type\n"


@pytest.fixture
def photos(tmp_path: Path, faces_dir: Path) -> list[Path]:
    """Three real photos copied beside the manifest (relative paths resolve against the manifest's folder)."""
    source = sorted((faces_dir / "celeba_wild" / "id_7201").iterdir())[:3]
    folder = tmp_path / "photos"
    folder.mkdir()
    return [Path(shutil.copy(p, folder / p.name)) for p in source]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_and_json_manifests_agree(tmp_path: Path, photos: list[Path]) -> None:
    a, b, c = (f"photos/{p.name}" for p in photos)
    csv_path = write(
        tmp_path,
        "m.csv",
        HEADER + f"GM101,2030-05-01T18:30:00Z,P001,{a};{b},passport\n"
        f"GM101,2030-05-01T18:30:00Z,P002,{photos[2].as_uri()},\n",
    )
    json_path = write(
        tmp_path,
        "m.json",
        json.dumps(
            {
                "flight_id": "GM101",
                "departure": "2030-05-01T20:30:00+02:00",  # same instant, explicit offset
                "travelers": [
                    {"traveler_id": "P001", "photos": [a, b], "document_type": "passport"},
                    {"traveler_id": "P002", "photos": [str(tmp_path / c)]},
                ],
            }
        ),
    )
    from_csv, from_json = load_manifest(csv_path), load_manifest(json_path)
    assert from_csv.departure == datetime(2030, 5, 1, 18, 30, tzinfo=UTC)
    assert (from_csv.flight_id, from_csv.departure, from_csv.travelers) == (
        from_json.flight_id,
        from_json.departure,
        from_json.travelers,
    )
    assert [t.traveler_id for t in from_csv.travelers] == ["P001", "P002"]
    assert from_csv.travelers[0].photos == (photos[0].resolve(), photos[1].resolve())
    assert from_csv.travelers[0].document_type == "passport" and from_csv.travelers[1].document_type is None


def test_duplicate_traveler_id_names_both_lines(tmp_path: Path, photos: list[Path]) -> None:
    rows = "".join(
        f"GM101,2030-05-01T18:30:00Z,{t},photos/{p.name},\n" for t, p in zip("ABA", photos, strict=True)
    )
    with pytest.raises(ManifestError, match=r"line 4: duplicate traveler_id A \(first at .*line 2\)"):
        load_manifest(write(tmp_path, "m.csv", HEADER + rows))


def test_one_photo_under_two_travelers_is_refused(tmp_path: Path, photos: list[Path]) -> None:
    rows = "".join(f"GM101,2030-05-01T18:30:00Z,{t},photos/{photos[0].name},\n" for t in "AB")
    with pytest.raises(ManifestError, match=r"line 3: photo .* of traveler B is also listed for traveler A"):
        load_manifest(write(tmp_path, "m.csv", HEADER + rows))


def test_missing_photo_file_names_line_and_path(tmp_path: Path, photos: list[Path]) -> None:
    text = HEADER + f"GM101,2030-05-01T18:30:00Z,A,photos/{photos[0].name};photos/gone.jpg,\n"
    with pytest.raises(ManifestError, match=r"line 2 photo 2: photo file 'photos/gone.jpg' not found"):
        load_manifest(write(tmp_path, "m.csv", text))
    data = {
        "flight_id": "GM1",
        "departure": "2030-05-01T18:30:00Z",
        "travelers": [{"traveler_id": "A", "photos": ["x.jpg"]}],
    }
    with pytest.raises(ManifestError, match=r"travelers\[0\] photo 1: photo file 'x.jpg' not found"):
        load_manifest(write(tmp_path, "m.json", json.dumps(data)))


@pytest.mark.parametrize(
    ("departure", "message"),
    [
        ("2030-05-01T18:30:00", "no UTC offset"),
        ("2030-05-01 18:30", "no UTC offset"),
        ("tomorrow", "not an ISO 8601 time"),
        ("", "must be an ISO 8601 time"),
    ],
)
def test_departure_must_be_an_explicit_utc_time(
    tmp_path: Path, photos: list[Path], departure: str, message: str
) -> None:
    text = HEADER + f"GM101,{departure},A,photos/{photos[0].name},\n"
    with pytest.raises(ManifestError, match=f"line 2: departure .*{message}"):
        load_manifest(write(tmp_path, "m.csv", text))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("flight,departure,traveler_id,photos\n", r"line 1: header must be .*missing \['flight_id'\]"),
        (HEADER + "GM101,2030-05-01T18:30:00Z,A\n", "line 2: expected 5 fields"),
        (HEADER + "GM101,2030-05-01T18:30:00Z,A,{p},,extra\n", "line 2: expected 5 fields"),
        (HEADER + "GM 101,2030-05-01T18:30:00Z,A,{p},\n", "line 2: flight_id 'GM 101'"),
        (HEADER + "GM101,2030-05-01T18:30:00Z,,{p},\n", "line 2: traveler_id ''"),
        (HEADER + "GM101,2030-05-01T18:30:00Z,A,,\n", "line 2: traveler A needs at least one photo"),
        (HEADER + "GM101,2030-05-01T18:30:00Z,A,https://example.org/a.jpg,\n", "only local files"),
        (HEADER + "GM101,2030-05-01T18:30:00Z,A,{p};{p},\n", "same photo twice"),
        (
            HEADER + "GM101,2030-05-01T18:30:00Z,A,{p},\nGM102,2030-05-01T18:30:00Z,B,{p},\n",
            "line 3: every row must have the same flight_id and departure",
        ),
        (HEADER, "no travelers"),
        (HEADER + 'GM101,2030-05-01T18:30:00Z,"A,{p},\n', "malformed CSV"),
    ],
)
def test_malformed_csv(tmp_path: Path, photos: list[Path], body: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        load_manifest(write(tmp_path, "m.csv", body.replace("{p}", f"photos/{photos[0].name}")))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"flight_id": "GM1",\n "departure": }', "line 2: not valid JSON"),
        ("[]", "top level must be an object"),
        (
            {"flight_id": "GM1", "departure": "2030-05-01T18:30:00Z", "travelers": {}},
            "'travelers' must be a list",
        ),
        ({"flight_id": "GM1", "departure": "2030-05-01T18:30:00Z", "travelers": []}, "no travelers"),
        (
            {"flight_id": "GM1", "departure": "2030-05-01T18:30:00Z", "travelers": [], "x": 1},
            r"unknown field.*'x'",
        ),
        ({"departure": "2030-05-01T18:30:00Z", "travelers": []}, "flight_id None"),
        (
            {"flight_id": "GM1", "departure": "2030-05-01T18:30:00Z", "travelers": [{"traveler_id": "A"}]},
            r"travelers\[0\]: traveler A needs at least one photo",
        ),
        (
            {
                "flight_id": "GM1",
                "departure": "2030-05-01T18:30:00Z",
                "travelers": [{"traveler_id": 7, "photos": []}],
            },
            r"travelers\[0\]: traveler_id 7",
        ),
        (
            {
                "flight_id": "GM1",
                "departure": "2030-05-01T18:30:00Z",
                "travelers": [{"traveler_id": "A", "face": 1}],
            },
            r"travelers\[0\]: unknown field.*'face'",
        ),
    ],
)
def test_malformed_json(tmp_path: Path, data: object, message: str) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(ManifestError, match=message):
        load_manifest(write(tmp_path, "m.json", text))


def test_unknown_format_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"unknown format '\.txt'"):
        load_manifest(write(tmp_path, "m.txt", "x"))
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    "departure", ["9999-12-31T23:30:00Z", "0001-01-01T00:30:00+01:00", "1900-01-01T00:00Z"]
)
def test_departure_out_of_any_plausible_range_is_refused(
    tmp_path: Path, photos: list[Path], departure: str
) -> None:
    text = HEADER + f"GM101,{departure},A,photos/{photos[0].name},\n"
    with pytest.raises(ManifestError, match=r"line 2: departure .* outside"):
        load_manifest(write(tmp_path, "m.csv", text))


def test_json_duplicate_keys_are_refused_not_silently_overwritten(tmp_path: Path, photos: list[Path]) -> None:
    """A second "travelers" key would silently drop every traveler of the first list."""
    one = json.dumps({"traveler_id": "A", "photos": [str(photos[0])]})
    text = (
        f'{{"flight_id": "GM1", "departure": "2030-05-01T18:30:00Z", "travelers": [{one}], "travelers": []}}'
    )
    with pytest.raises(ManifestError, match="duplicate key 'travelers'"):
        load_manifest(write(tmp_path, "m.json", text))


def test_json_photos_of_the_wrong_type_say_so(tmp_path: Path, photos: list[Path]) -> None:
    def manifest(value: object) -> Path:
        traveler = {"traveler_id": "A", "photos": value}
        data = {"flight_id": "GM1", "departure": "2030-05-01T18:30:00Z", "travelers": [traveler]}
        return write(tmp_path, "m.json", json.dumps(data))

    with pytest.raises(ManifestError, match="photos must be a list"):
        load_manifest(manifest(str(photos[0])))
    with pytest.raises(ManifestError, match="photo 2: photo path must be a text"):
        load_manifest(manifest([str(photos[0]), 5]))


def test_a_directory_is_not_a_photo(tmp_path: Path, photos: list[Path]) -> None:
    text = HEADER + "GM101,2030-05-01T18:30:00Z,A,photos,\n"
    with pytest.raises(ManifestError, match="line 2 photo 1: photo 'photos' is not a regular file"):
        load_manifest(write(tmp_path, "m.csv", text))


def test_a_manifest_says_whether_the_flight_departs_or_arrives(tmp_path: Path, photos: list[Path]) -> None:
    a, b = (f"photos/{p.name}" for p in photos[:2])
    header = HEADER.rstrip("\n") + ",direction\n"
    inbound = write(
        tmp_path,
        "in.csv",
        header
        + f"GM101,2030-05-01T07:10:00Z,P001,{a},passport,arrival\nGM101,2030-05-01T07:10:00Z,P002,{b},,ARRIVAL\n",
    )
    assert load_manifest(inbound).direction == "arrival"
    outbound = {
        "flight_id": "GM101",
        "departure": "2030-05-01T18:30:00Z",
        "travelers": [{"traveler_id": "P1", "photos": [a]}],
    }
    assert load_manifest(write(tmp_path, "out.json", json.dumps(outbound))).direction == "departure"
    as_json = {**outbound, "direction": "arrival"}
    assert load_manifest(write(tmp_path, "in.json", json.dumps(as_json))).direction == "arrival"
    with pytest.raises(ManifestError, match="direction 'inbound' must be one of departure, arrival"):
        load_manifest(write(tmp_path, "bad.json", json.dumps({**outbound, "direction": "inbound"})))
    mixed = (
        header
        + f"GM101,2030-05-01T07:10:00Z,P001,{a},,arrival\nGM101,2030-05-01T07:10:00Z,P002,{b},,departure\n"
    )
    with pytest.raises(ManifestError, match="line 3: every row must have the same flight_id and departure"):
        load_manifest(write(tmp_path, "mixed.csv", mixed))


# -- photos are confined to the manifest's folder (or the photo root given) --------------------------------


def outside_photo(tmp_path: Path, photos: list[Path]) -> Path:
    """A photo next to, not inside, the folder the manifest lives in."""
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir(exist_ok=True)
    return Path(shutil.copy(photos[0], elsewhere / "secret.jpg"))


@pytest.mark.parametrize("form", ["../", "absolute", "file://", "symlink", "symlinked folder"])
def test_a_photo_outside_the_manifests_folder_is_refused(
    tmp_path: Path, photos: list[Path], form: str
) -> None:
    outside = outside_photo(tmp_path, photos)
    folder = tmp_path / "manifest"
    folder.mkdir()
    if form == "symlink":
        (folder / "link.jpg").symlink_to(outside)
    if form == "symlinked folder":
        (folder / "linked").symlink_to(outside.parent, target_is_directory=True)
    reference = {
        "../": f"../../{outside.parent.name}/secret.jpg",
        "absolute": str(outside),
        "file://": outside.as_uri(),
        "symlink": "link.jpg",
        "symlinked folder": "linked/secret.jpg",
    }[form]
    text = HEADER + f"GM101,2030-05-01T18:30:00Z,A,{reference},\n"
    with pytest.raises(ManifestError, match=r"line 2 photo 1: photo .* lies outside the photo folder"):
        load_manifest(write(folder, "m.csv", text))


def test_photos_inside_the_folder_or_the_photo_root_are_accepted(tmp_path: Path, photos: list[Path]) -> None:
    outside = outside_photo(tmp_path, photos)
    (tmp_path / "photos" / "alias.jpg").symlink_to(photos[1])  # a symlink that stays inside is fine
    text = (
        HEADER
        + f"GM101,2030-05-01T18:30:00Z,A,photos/alias.jpg;{photos[0].as_uri()},\n"
        + f"GM101,2030-05-01T18:30:00Z,B,{outside},\n"
    )
    manifest_path = write(tmp_path, "m.csv", text)
    with pytest.raises(ManifestError, match="line 3 photo 1"):
        load_manifest(manifest_path)
    manifest = load_manifest(manifest_path, photo_root=tmp_path.parent)
    assert manifest.travelers[0].photos == (photos[1].resolve(), photos[0].resolve())
    assert manifest.read_photo(manifest.travelers[1].photos[0]) == outside.read_bytes()


def test_a_photo_swapped_for_a_symlink_after_validation_is_not_read(
    tmp_path: Path, photos: list[Path]
) -> None:
    outside = outside_photo(tmp_path, photos)
    manifest = load_manifest(
        write(tmp_path, "m.csv", HEADER + f"GM101,2030-05-01T18:30:00Z,A,photos/{photos[0].name},\n")
    )
    photo = manifest.travelers[0].photos[0]
    assert manifest.read_photo(photo) == photos[0].read_bytes()
    photo.unlink()
    photo.symlink_to(outside)
    with pytest.raises(PermissionError, match="no longer lies inside"):
        manifest.read_photo(photo)
