"""Tests for coco_download: the real download code against a COCO-like server on loopback."""
from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import random
import re
import shutil
import socket
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from prepare import coco_download

MAX_REQUESTS = 40  # a runaway retry loop fails the test instead of hanging it


# --------------------------------------------------------------------------- fixtures: archives and server


def _jpeg(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    # noisy pixels so each JPEG is a few KB and a mid-file connection drop falls inside the image data
    noise = random.Random(seed).randbytes(width * height * 3)
    Image.frombytes("RGB", (width, height), noise).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zip_file:
        for name, data in members.items():
            zip_file.writestr(name, data)
    return buffer.getvalue()


def _file_name(split: str, year: str, image_id: int) -> str:
    """The official image file names: COCO_val2014_000000000003.jpg in 2014, 000000000003.jpg in 2017."""
    return f"COCO_{split}{year}_{image_id:012d}.jpg" if year == "2014" else f"{image_id:012d}.jpg"


def _captions(split: str, image_ids: list[int], size: tuple[int, int], year: str = "2014") -> dict:
    images = [{"id": image_id, "file_name": _file_name(split, year, image_id),
               "width": size[0], "height": size[1]} for image_id in image_ids]
    annotations = [{"id": 100 * image_id + k, "image_id": image_id, "caption": f"{split} image {image_id} caption {k}"}
                   for image_id in image_ids for k in range(2)]
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations}


def _instances(image_ids: list[int]) -> dict:
    """A COCO instance annotation file: a person in every image, a dog in the first."""
    annotations = [{"id": 10 * image_id, "image_id": image_id, "category_id": 1, "bbox": [0, 0, 5, 5]}
                   for image_id in image_ids]
    annotations.append({"id": 7, "image_id": image_ids[0], "category_id": 18, "bbox": [1, 1, 4, 4]})
    return {"images": [{"id": image_id} for image_id in image_ids], "annotations": annotations,
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}


TRAIN_IDS, VAL_IDS = [1, 2], [3, 4, 5]


def _tree(year: str) -> dict[str, bytes]:
    """The official tree of one release, in miniature: URL path -> archive bytes."""
    files = {}
    for split, ids in (("train", TRAIN_IDS), ("val", VAL_IDS)):
        files[f"/zips/{split}{year}.zip"] = _zip({f"{split}{year}/{_file_name(split, year, i)}": _jpeg(40, 30, i)
                                                  for i in ids})
    files[f"/annotations/annotations_trainval{year}.zip"] = _zip({
        f"annotations/captions_train{year}.json": json.dumps(_captions("train", TRAIN_IDS, (40, 30), year)).encode(),
        f"annotations/captions_val{year}.json": json.dumps(_captions("val", VAL_IDS, (40, 30), year)).encode(),
        f"annotations/instances_train{year}.json": json.dumps(_instances(TRAIN_IDS)).encode(),
        f"annotations/instances_val{year}.json": json.dumps(_instances(VAL_IDS)).encode(),
        f"annotations/person_keypoints_train{year}.json": b"{}",  # must not be extracted
    })
    return files


@pytest.fixture(scope="module")
def archives() -> dict[str, bytes]:
    """The 2014 tree, in miniature."""
    return _tree("2014")


class _CocoHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.files; can drop a transfer once (server.drop_after) or ignore Range (server.honour_range)."""

    def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
        server = self.server
        with server.lock:
            server.requests.append((self.path, self.headers.get("Range")))
            too_many = len(server.requests) > MAX_REQUESTS
        body = server.files.get(self.path)
        if server.fail_with:  # a mirror in trouble
            self.send_error(server.fail_with)
            return
        if too_many or body is None:
            self.send_error(410 if too_many else 404)
            return
        start = self._range_start() if server.honour_range else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        cut = server.drop_after.pop(self.path, None)  # only the first transfer of that path is cut
        self.wfile.write(payload[:cut] if cut is not None else payload)
        self.close_connection = True

    def _range_start(self) -> int:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        return int(match.group(1)) if match else 0

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(archives):
    """An HTTP server on 127.0.0.1 (free port) serving the miniature tree; shut down after the test."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CocoHandler)
    httpd.files = dict(archives)
    httpd.requests, httpd.lock = [], threading.Lock()
    httpd.drop_after, httpd.honour_range, httpd.fail_with = {}, True, None
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checksums_file(tmp_path: Path, archives: dict[str, bytes], with_size: bool = False, **overrides) -> Path:
    table = {path.rsplit("/", 1)[-1]: ({"sha256": _sha(data), "size": len(data)} if with_size else _sha(data))
             for path, data in archives.items()}
    table.update(overrides)
    path = tmp_path / "checksums.json"
    path.write_text(json.dumps(table))
    return path


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    coco_download.add_arguments(parser)
    return coco_download.run(parser.parse_args(list(argv)))


def _run_against(server, tmp_path: Path, *extra: str, checksums: Path | None = None) -> int:
    checksums = checksums or _checksums_file(tmp_path, server.files)
    return _run("--out", str(tmp_path / "coco"), "--base-url", server.base_url, "--checksums", str(checksums),
                "--n-val", "1", "--n-test", "1", *extra)


def _one_clear_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


# --------------------------------------------------------------------------- download, verify, extract


def test_full_run_gives_the_expected_layout(server, tmp_path):
    assert _run_against(server, tmp_path) == 0
    out = tmp_path / "coco"
    assert sorted(path for path, _ in server.requests) == [
        "/annotations/annotations_trainval2014.zip", "/zips/train2014.zip", "/zips/val2014.zip"]
    train = json.loads((out / "annotations" / "captions_train2014.json").read_text())
    assert [image["id"] for image in train["images"]] == TRAIN_IDS
    assert (out / "annotations" / "captions_val2014.json").is_file()
    instances = json.loads((out / "annotations" / "instances_val2014.json").read_text())
    assert instances == _instances(VAL_IDS)
    assert (out / "annotations" / "instances_train2014.json").is_file()
    assert not (out / "annotations" / "person_keypoints_train2014.json").exists()
    assert not list((out / "annotations").glob("*.tmp"))  # no temporary file left
    for split, ids in (("train", TRAIN_IDS), ("val", VAL_IDS)):
        names = sorted(path.name for path in (out / "images" / f"{split}2014").glob("*.jpg"))
        assert names == [f"COCO_{split}2014_{i:012d}.jpg" for i in ids]
    with Image.open(out / "images" / "val2014" / "COCO_val2014_000000000003.jpg") as picture:
        assert picture.size == (40, 30)
    assert not list((out / "images").glob(".*"))  # no staging folder left behind
    assert (out / "annotations" / "captions_val5k2014.json").is_file()
    assert (out / "annotations" / "captions_test5k2014.json").is_file()


def test_second_run_downloads_and_extracts_nothing(server, tmp_path, capsys):
    assert _run_against(server, tmp_path) == 0
    image = tmp_path / "coco" / "images" / "train2014" / "COCO_train2014_000000000001.jpg"
    captions = tmp_path / "coco" / "annotations" / "captions_train2014.json"
    stamps = (image.stat().st_mtime_ns, captions.stat().st_mtime_ns)
    requests_before = len(server.requests)
    capsys.readouterr()
    assert _run_against(server, tmp_path) == 0
    assert len(server.requests) == requests_before
    assert (image.stat().st_mtime_ns, captions.stat().st_mtime_ns) == stamps
    assert "nothing to download or extract" in capsys.readouterr().out


def test_instance_files_are_added_to_an_earlier_captions_only_download(server, tmp_path):
    """A user who ran the older tool (captions only) gets the instance files on the next run; a file of theirs is
    not replaced."""
    assert _run_against(server, tmp_path) == 0
    annotations = tmp_path / "coco" / "annotations"
    (annotations / "instances_train2014.json").unlink()
    (annotations / "instances_val2014.json").write_text("their own file")
    captions = (annotations / "captions_val2014.json").read_text()
    assert _run_against(server, tmp_path) == 0
    assert json.loads((annotations / "instances_train2014.json").read_text()) == _instances(TRAIN_IDS)
    assert (annotations / "instances_val2014.json").read_text() == "their own file"
    assert (annotations / "captions_val2014.json").read_text() == captions


def test_an_annotations_zip_without_instance_files_still_gives_the_captions(server, tmp_path, capsys):
    server.files["/annotations/annotations_trainval2014.zip"] = _zip({
        "annotations/captions_train2014.json": json.dumps(_captions("train", TRAIN_IDS, (40, 30))).encode(),
        "annotations/captions_val2014.json": json.dumps(_captions("val", VAL_IDS, (40, 30))).encode()})
    assert _run_against(server, tmp_path) == 0
    annotations = tmp_path / "coco" / "annotations"
    assert (annotations / "captions_train2014.json").is_file()
    assert not (annotations / "instances_train2014.json").exists()
    assert "holds no instances_val2014.json" in capsys.readouterr().err


def test_interrupted_extraction_is_redone(server, tmp_path):
    out = tmp_path / "coco"
    staging = out / "images" / ".train2014.partial" / "train2014"
    staging.mkdir(parents=True)
    (staging / "half_written.jpg").write_bytes(b"\xff\xd8")
    assert _run_against(server, tmp_path) == 0
    assert not (out / "images" / ".train2014.partial").exists()
    assert not (out / "images" / "train2014" / "half_written.jpg").exists()
    assert len(list((out / "images" / "train2014").glob("*.jpg"))) == len(TRAIN_IDS)


def test_image_folder_not_made_by_the_tool_is_left_alone(server, tmp_path, capsys):
    user_folder = tmp_path / "coco" / "images" / "train2014"
    user_folder.mkdir(parents=True)
    (user_folder / "mine.jpg").write_bytes(b"keep me")
    assert _run_against(server, tmp_path) != 0
    assert "remove it and run again" in _one_clear_error(capsys)
    assert (user_folder / "mine.jpg").read_bytes() == b"keep me"


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    body = server.files["/zips/train2014.zip"]
    cut = len(body) // 2
    server.drop_after["/zips/train2014.zip"] = cut
    assert _run_against(server, tmp_path) == 0
    train_requests = [range_header for path, range_header in server.requests if path == "/zips/train2014.zip"]
    assert train_requests == [None, f"bytes={cut}-"]
    archive = tmp_path / "coco" / "downloads" / "train2014.zip"
    assert _sha(archive.read_bytes()) == _sha(body)
    assert not archive.with_name("train2014.zip.part").exists()


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    body = server.files["/zips/val2014.zip"]
    downloads = tmp_path / "coco" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "val2014.zip.part").write_bytes(body[:1000])
    assert _run_against(server, tmp_path) == 0
    assert [r for p, r in server.requests if p == "/zips/val2014.zip"] == ["bytes=1000-"]
    assert (downloads / "val2014.zip").read_bytes() == body


def test_server_ignoring_range_still_gives_a_correct_file(server, tmp_path):
    server.honour_range = False
    body = server.files["/zips/train2014.zip"]
    downloads = tmp_path / "coco" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "train2014.zip.part").write_bytes(b"x" * 700)  # would corrupt the file if appended to
    server.drop_after["/zips/val2014.zip"] = 900  # and a drop mid-way: the retry's Range is ignored too
    assert _run_against(server, tmp_path) == 0
    assert [r for p, r in server.requests if p == "/zips/train2014.zip"] == ["bytes=700-"]
    assert [r for p, r in server.requests if p == "/zips/val2014.zip"] == [None, "bytes=900-"]
    assert (downloads / "train2014.zip").read_bytes() == body
    assert (downloads / "val2014.zip").read_bytes() == server.files["/zips/val2014.zip"]


def test_wrong_checksum_is_downloaded_again_once_then_fails(server, tmp_path, capsys):
    checksums = _checksums_file(tmp_path, server.files, **{"train2014.zip": "0" * 64})
    assert _run_against(server, tmp_path, checksums=checksums) != 0
    assert [p for p, _ in server.requests].count("/zips/train2014.zip") == 2
    message = _one_clear_error(capsys)
    assert "train2014.zip" in message and "verification" in message
    assert not (tmp_path / "coco" / "downloads" / "train2014.zip").exists()
    assert not (tmp_path / "coco" / "images" / "train2014").exists()


def test_not_enough_disk_space_fails_before_any_download(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**6, used=10**6 - 100, free=100))
    checksums = _checksums_file(tmp_path, server.files, with_size=True)
    assert _run_against(server, tmp_path, checksums=checksums) != 0
    assert server.requests == []
    message = _one_clear_error(capsys)
    assert "disk space" in message and str(tmp_path / "coco") in message


def test_size_from_checksums_file_is_checked(server, tmp_path, capsys):
    table = json.loads(_checksums_file(tmp_path, server.files, with_size=True).read_text())
    table["val2014.zip"]["size"] += 1
    (tmp_path / "sizes.json").write_text(json.dumps(table))
    assert _run_against(server, tmp_path, checksums=tmp_path / "sizes.json") != 0
    assert "val2014.zip failed verification twice" in _one_clear_error(capsys)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("case", ["year", "split", "unreachable", "404", "bad_checksums", "no_karpathy"])
def test_user_errors_are_one_sentence(server, tmp_path, capsys, case):
    out, checksums = str(tmp_path / "coco"), str(_checksums_file(tmp_path, server.files))
    argv = {
        "year": ["--year", "2015"],
        "split": ["--splits", "train,test"],
        "unreachable": ["--base-url", f"http://127.0.0.1:{_closed_port()}"],
        "404": ["--base-url", server.base_url + "/no/such/mirror"],
        "bad_checksums": ["--checksums", str(tmp_path / "bad.json")],
        "no_karpathy": ["--karpathy-split", str(tmp_path / "missing_dataset_coco.json")],
    }[case]
    (tmp_path / "bad.json").write_text("{not json")
    assert _run("--out", out, "--base-url", server.base_url, "--checksums", checksums, *argv) != 0
    message = _one_clear_error(capsys)
    expected = {"year": "--year", "split": "--splits", "unreachable": "Could not reach", "404": "HTTP 404",
                "bad_checksums": "not valid JSON", "no_karpathy": "does not exist"}[case]
    assert expected in message
    if case in ("year", "split", "bad_checksums", "no_karpathy"):
        assert server.requests == []  # argument errors are caught before anything is fetched


def test_built_in_table_has_every_official_archive():
    for year in coco_download.YEARS:
        for archive in coco_download.plan_archives(year, ["train", "val"], coco_download.KNOWN_ARCHIVES):
            assert archive.size and re.fullmatch(r"[0-9a-f]{64}", archive.sha256), archive.name


# --------------------------------------------------------------------------- split files


def _write_official(coco_dir: Path) -> None:
    annotations = coco_dir / "annotations"
    annotations.mkdir(parents=True)
    (annotations / "captions_train2014.json").write_text(json.dumps(_captions("train", TRAIN_IDS, (640, 480))))
    (annotations / "captions_val2014.json").write_text(json.dumps(_captions("val", VAL_IDS, (500, 375))))


def _karpathy_entry(split: str, folder: str, cocoid: int) -> dict:
    return {"filepath": folder, "filename": f"COCO_{folder}_{cocoid:012d}.jpg", "cocoid": cocoid, "split": split,
            "sentences": [{"raw": f" Raw sentence for {cocoid}. ", "tokens": []}]}


def test_karpathy_split_files(tmp_path):
    coco_dir = tmp_path / "coco"
    _write_official(coco_dir)
    # 99 is in no official file, but its image is on disk: its size is read from the file
    (coco_dir / "images" / "val2014").mkdir(parents=True)
    Image.new("RGB", (32, 24)).save(coco_dir / "images" / "val2014" / "COCO_val2014_000000000099.jpg")
    entries = [_karpathy_entry("train", "train2014", 1), _karpathy_entry("restval", "val2014", 3),
               _karpathy_entry("val", "val2014", 4), _karpathy_entry("test", "val2014", 5),
               _karpathy_entry("test", "val2014", 99), _karpathy_entry("test", "val2014", 98)]
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": entries, "dataset": "coco"}))

    paths = coco_download.write_karpathy_split(karpathy, coco_dir, year=2014)

    assert set(paths) == {"train", "val", "test"}
    split = {name: json.loads(path.read_text()) for name, path in paths.items()}
    assert paths["test"] == coco_dir / "annotations" / "captions_karpathy_test.json"
    assert [image["id"] for image in split["train"]["images"]] == [1, 3]  # restval joins train
    assert split["train"]["images"][1] == {"id": 3, "width": 500, "height": 375,
                                           "file_name": "val2014/COCO_val2014_000000000003.jpg"}
    test_images = {image["id"]: image for image in split["test"]["images"]}
    assert (test_images[99]["width"], test_images[99]["height"]) == (32, 24)
    assert (test_images[98]["width"], test_images[98]["height"]) == (0, 0)  # not on disk: unknown
    test_captions = {}
    for annotation in split["test"]["annotations"]:
        test_captions.setdefault(annotation["image_id"], []).append(annotation["caption"])
    assert test_captions[5] == ["val image 5 caption 0", "val image 5 caption 1"]  # official captions preferred
    assert test_captions[99] == ["Raw sentence for 99."]
    for data in split.values():
        ids = [annotation["id"] for annotation in data["annotations"]]
        assert len(ids) == len(set(ids))


def test_karpathy_split_through_run_replaces_val5k(server, tmp_path):
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": [_karpathy_entry("test", "val2014", 3)]}))
    assert _run_against(server, tmp_path, "--karpathy-split", str(karpathy)) == 0
    annotations = tmp_path / "coco" / "annotations"
    test = json.loads((annotations / "captions_karpathy_test.json").read_text())
    assert test["images"][0]["file_name"] == "val2014/COCO_val2014_000000000003.jpg"
    assert (test["images"][0]["width"], test["images"][0]["height"]) == (40, 30)
    assert not (annotations / "captions_val5k2014.json").exists()


def test_invalid_karpathy_split_is_a_clear_error(tmp_path):
    _write_official(tmp_path / "coco")
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": [{"cocoid": 1, "split": "holdout"}]}))
    with pytest.raises(coco_download.CocoDownloadError, match="dataset_coco.json"):
        coco_download.write_karpathy_split(karpathy, tmp_path / "coco")


def _write_val(coco_dir: Path, image_ids: list[int]) -> None:
    annotations = coco_dir / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    (annotations / "captions_val2014.json").write_text(json.dumps(_captions("val", image_ids, (10, 10))))


def _split_ids(coco_dir: Path, **kwargs) -> dict[str, list[int]]:
    paths = coco_download.write_val_test_split(coco_dir, **kwargs)
    return {split: [image["id"] for image in json.loads(path.read_text())["images"]] for split, path in paths.items()}


def test_val_test_split_is_deterministic_and_follows_the_documented_rule(tmp_path):
    ids = list(range(100, 130))
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    _write_val(tmp_path / "a", ids)
    _write_val(tmp_path / "b", shuffled)  # same images, another order in the file

    first = _split_ids(tmp_path / "a", n_val=6, n_test=4, seed=0)
    assert first == _split_ids(tmp_path / "a", n_val=6, n_test=4, seed=0)
    assert first == _split_ids(tmp_path / "b", n_val=6, n_test=4, seed=0)
    rule = sorted(ids)
    random.Random(0).shuffle(rule)  # the rule in the module docstring
    assert first == {"val": sorted(rule[:6]), "test": sorted(rule[6:10])}
    assert _split_ids(tmp_path / "a", n_val=6, n_test=4, seed=1) != first


def test_val_test_split_files_resolve_under_images(tmp_path):
    _write_val(tmp_path, VAL_IDS)
    paths = coco_download.write_val_test_split(tmp_path, n_val=1, n_test=2)
    assert paths == {"val": tmp_path / "annotations" / "captions_val5k2014.json",
                     "test": tmp_path / "annotations" / "captions_test5k2014.json"}
    test = json.loads(paths["test"].read_text())
    assert all(image["file_name"].startswith("val2014/COCO_val2014_") for image in test["images"])
    assert {a["image_id"] for a in test["annotations"]} == {image["id"] for image in test["images"]}
    assert len(test["annotations"]) == 2 * len(test["images"])
    with pytest.raises(coco_download.CocoDownloadError, match="too few"):
        coco_download.write_val_test_split(tmp_path, n_val=2, n_test=2)


def test_a_mirror_answering_500_is_tried_five_times_and_the_advice_fits(server, tmp_path, capsys):
    server.fail_with = 500
    assert _run_against(server, tmp_path) != 0
    err = capsys.readouterr().err
    assert "attempt 5 of 5" in err and "attempt 6" not in err
    last = err.strip().splitlines()[-1]
    assert "failed 5 times, the last with HTTP 500" in last and "nothing was received" in last
    assert ".part" not in last  # no advice to resume from a file that does not exist


# --------------------------------------------------------------------------- COCO 2017


def test_2017_defaults_fit_its_val_split():
    # val2017 has 5,000 images: the 2014 defaults (5,000 + 5,000) cannot be cut from it, the 2017 ones can.
    assert coco_download.held_out_sizes("2017", None, None) == (2500, 2500)
    assert coco_download.held_out_sizes("2014", None, None) == (5000, 5000)
    for year, (n_val, n_test) in coco_download.HELD_OUT_DEFAULTS.items():
        assert n_val > 0 and n_test > 0 and n_val + n_test <= coco_download.VAL_IMAGES[year]


def test_2017_sizes_too_large_are_refused_before_any_download(server, tmp_path, capsys):
    assert _run("--out", str(tmp_path / "coco"), "--year", "2017", "--base-url", server.base_url,
                "--n-val", "5000") == 1
    error = _one_clear_error(capsys)
    assert "val2017 has 5000 images" in error and "nothing was downloaded" in error
    assert server.requests == []
    assert not (tmp_path / "coco" / "downloads").exists()


def test_2017_sizes_are_not_checked_against_val_with_karpathy_split(tmp_path):
    # Karpathy's file gives the held-out splits; --n-val/--n-test are then unused.
    assert coco_download.held_out_sizes("2017", 5000, 5000, used=False) == (5000, 5000)


def test_full_2017_run_with_its_defaults_names(server, tmp_path):
    server.files = _tree("2017")
    checksums = _checksums_file(tmp_path, server.files)
    assert _run("--out", str(tmp_path / "coco"), "--year", "2017", "--base-url", server.base_url,
                "--checksums", str(checksums), "--n-val", "1", "--n-test", "2") == 0
    out = tmp_path / "coco"
    assert sorted(path for path, _ in server.requests) == [
        "/annotations/annotations_trainval2017.zip", "/zips/train2017.zip", "/zips/val2017.zip"]
    assert sorted(path.name for path in (out / "images" / "val2017").glob("*.jpg")) == [
        f"{i:012d}.jpg" for i in VAL_IDS]
    val = json.loads((out / "annotations" / "captions_val5k2017.json").read_text())
    test = json.loads((out / "annotations" / "captions_test5k2017.json").read_text())
    assert len(val["images"]) == 1 and len(test["images"]) == 2
    for image in val["images"] + test["images"]:  # resolvable under images/
        assert (out / "images" / image["file_name"]).is_file()


# --------------------------------------------------------------------------- disk space


def test_disk_space_needed_for_2014_with_and_without_deleting_archives(tmp_path):
    archives = coco_download.plan_archives("2014", ["train", "val"], coco_download.KNOWN_ARCHIVES)
    total = sum(archive.size for archive in archives)  # 20.4 GB of archives
    assert coco_download._bytes_needed(archives, tmp_path) == 2 * total  # every archive kept beside its files
    # Deleting each archive once extracted: the peak is the last one being extracted beside what came before.
    with_deletion = coco_download._bytes_needed(archives, tmp_path, delete_archives=True)
    largest = max(archive.size for archive in archives)
    assert with_deletion < 0.7 * 2 * total
    assert total + min(archive.size for archive in archives) <= with_deletion <= total + largest
    assert 26e9 < with_deletion < 28e9  # the ~27 GB docs/COCO.md states


def test_disk_space_needed_counts_a_partial_download(tmp_path):
    archive = coco_download.Archive("zips/val2014.zip", 1000, None, image_folder="val2014")
    (tmp_path / "val2014.zip.part").write_bytes(b"x" * 400)
    assert coco_download._bytes_needed([archive], tmp_path) == 600 + 1000
    assert coco_download._bytes_needed([archive], tmp_path, delete_archives=True) == 600 + 1000


def test_notebook_0_writes_the_karpathy_split_of_a_downloaded_coco_without_fetching_again(server, tmp_path):
    import prepare_data
    assert _run_against(server, tmp_path) == 0  # COCO 2014 downloaded and extracted
    fetched = len(server.requests)
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": [_karpathy_entry("train", "train2014", 1),
                                               _karpathy_entry("val", "val2014", 3),
                                               _karpathy_entry("test", "val2014", 4)]}))
    splits = prepare_data.ensure_dataset("coco", tmp_path / "coco", coco_year=2014, karpathy_split=karpathy)
    assert splits == ["karpathy_train", "karpathy_val", "karpathy_test"]
    for split, image_id in zip(splits, (1, 3, 4)):
        data = json.loads((tmp_path / "coco" / "annotations" / f"captions_{split}.json").read_text())
        assert [image["id"] for image in data["images"]] == [image_id]
    assert len(server.requests) == fetched


def test_a_binary_file_given_as_json_is_named_in_a_short_message(tmp_path):
    from captioning.annotations import load_instances
    binary = tmp_path / "dataset_coco.zip"
    binary.write_bytes(bytes(range(128, 256)) * 4000)  # not UTF-8, half a megabyte
    with pytest.raises(coco_download.CocoDownloadError) as refused:
        coco_download._read_karpathy(binary)
    assert "not a valid dataset_coco.json" in str(refused.value) and len(str(refused.value)) < 500
    with pytest.raises(ValueError) as refused:
        load_instances(binary)
    assert "not valid JSON" in str(refused.value) and len(str(refused.value)) < 500
