"""Real MS COCO captions: download, verify, extract, and write the split annotation files.

Usage (through the project's CLI):

    python prepare_data.py coco --out data/coco [--year 2014|2017] [--splits train,val]
        [--base-url URL] [--checksums FILE] [--karpathy-split PATH/dataset_coco.json]

What it does, for year Y and each split S in --splits:

1. Downloads BASE/annotations/annotations_trainvalY.zip and BASE/zips/SY.zip (BASE defaults to
   http://images.cocodataset.org; --base-url points at a mirror serving the same tree) into OUT/downloads/.
   A transfer goes into NAME.part and an interrupted one resumes with an HTTP Range request, within the run
   and on the next run; a server that ignores Range makes it start that file over.
2. Verifies each archive's size and SHA-256 (table below, from TensorFlow Datasets; --checksums FILE replaces it
   with a JSON object {"train2014.zip": "<sha256 hex>", ...} or {"train2014.zip": {"sha256": ..., "size": ...}}).
   A corrupt archive is deleted and downloaded once more; a second mismatch is an error.
3. Extracts OUT/annotations/captions_SY.json and instances_SY.json (the caption files, and the instance
   annotations that evaluate.py's CHAIR score reads; the other annotation files are left in the zip) and
   OUT/images/SY/ (the zip's top folder SY/). An instance file already there is kept as it is.
   Images are extracted into a hidden staging folder and renamed into place with a completion marker inside,
   so an interrupted extraction is simply redone. A run with everything in place downloads and extracts nothing.
4. Writes the held-out evaluation splits:
   - with --karpathy-split: OUT/annotations/captions_karpathy_{train,val,test}.json (Karpathy's split;
     "restval" joins train), see `write_karpathy_split`;
   - otherwise, when val is among the splits: OUT/annotations/captions_val5kY.json and captions_test5kY.json.
     Rule: take the images of captions_valY.json sorted by image id, shuffle them with
     random.Random(seed).shuffle (seed 0 by default), the first n_val (5000) images form val5k and the next
     n_test (5000) form test5k. Their file_name gets a "valY/" prefix, so it resolves under OUT/images/.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image
from tqdm import tqdm

from captioning.annotations import load_coco
from captioning.files import atomic_write, brief, check_file, sha256_file, write_json_atomic

DEFAULT_BASE_URL = "http://images.cocodataset.org"
YEARS = ("2014", "2017")
SPLITS = ("train", "val")
VAL_IMAGES = {"2014": 40504, "2017": 5000}  # images in each release's official val split
# Default sizes of the held-out val/test splits cut from the official val split (without Karpathy's file). 2017's
# val has only 5,000 images (its train took the rest of val2014), so it is halved: 2,500 to choose the checkpoint
# by, 2,500 never looked at until the final evaluation. The file names keep "5k" whatever the sizes.
HELD_OUT_DEFAULTS = {"2014": (5000, 5000), "2017": (2500, 2500)}

# Size in bytes and SHA-256 of the official archives, copied from TensorFlow Datasets'
# tensorflow_datasets/url_checksums/coco.txt (github.com/tensorflow/datasets, commits
# b5b3b54514857c2f489f7fa65a00a0ddc5a5050a and 333639b37af6c6fedf3610a4a2d42f1c6ef6f7d5 agree).
KNOWN_ARCHIVES: dict[str, tuple[int | None, str | None]] = {
    "annotations_trainval2014.zip": (
        252872794, "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009"),
    "train2014.zip": (
        13510573713, "ede4087e640bddba550e090eae701092534b554b42b05ac33f0300b984b31775"),
    "val2014.zip": (
        6645013297, "fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0"),
    "annotations_trainval2017.zip": (
        252907541, "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268"),
    "train2017.zip": (
        19336861798, "69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929"),
    "val2017.zip": (
        815585330, "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05"),
}

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
EXTRACTED_MARKER = ".coco_download_complete"  # written inside images/<split><year>/ once it is whole
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60  # a stalled connection fails (and resumes) instead of hanging forever
ATTEMPTS = 5  # transfers interrupted mid-body are resumed this many times per file before giving up


class CocoDownloadError(Exception):
    """A problem the user can fix (arguments, network, disk, data); reported as one sentence."""


class _Interrupted(Exception):
    """A transfer that stopped early; the caller resumes it."""


@dataclass(frozen=True)
class Archive:
    """One archive of the official COCO tree and what this tool keeps from it."""

    url_path: str  # relative to the base URL, e.g. "zips/train2014.zip"
    size: int | None  # bytes; None when unknown
    sha256: str | None  # None when unknown: only the size is checked
    image_folder: str | None = None  # top folder of an image zip, e.g. "train2014"
    caption_files: tuple[str, ...] = ()  # caption files kept from the annotations zip
    instance_files: tuple[str, ...] = ()  # instance annotation files kept from it (CHAIR's object labels)

    @property
    def name(self) -> str:
        """The archive's file name, e.g. "train2014.zip"."""
        return self.url_path.rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- CLI edge


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `prepare_data.py coco` options to parser."""
    parser.add_argument("--out", type=Path, default=Path("data/coco"),
                        help="dataset directory to fill (default: data/coco)")
    parser.add_argument("--year", default="2014", help="COCO release: 2014 or 2017 (default: 2014)")
    parser.add_argument("--splits", default="train,val",
                        help="comma-separated splits to fetch, from train,val (default: train,val)")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help=f"server holding the official tree (default: {DEFAULT_BASE_URL})")
    parser.add_argument("--checksums", type=Path, default=None,
                        help='JSON {"<archive>.zip": "<sha256>"} replacing the built-in table (for a mirror)')
    parser.add_argument("--karpathy-split", type=Path, default=None,
                        help="Karpathy's dataset_coco.json; writes captions_karpathy_{train,val,test}.json")
    parser.add_argument("--n-val", type=int, default=None,
                        help="images in the val5k split (default: 5000 for 2014, 2500 for 2017)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="images in the test5k split (default: 5000 for 2014, 2500 for 2017)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed of the val5k/test5k split (default: 0)")
    parser.add_argument("--delete-archives", action="store_true",
                        help="delete each archive once it is extracted (saves disk space)")


def run(args: argparse.Namespace) -> int:
    """Run the COCO preparation from parsed arguments; return the process exit code."""
    try:
        year, splits = _parse_year(args.year), _parse_splits(args.splits)
        args.n_val, args.n_test = held_out_sizes(year, args.n_val, args.n_test, args.karpathy_split is None)
        table = load_checksums(args.checksums) if args.checksums else KNOWN_ARCHIVES
        if args.karpathy_split is not None and \
                not check_file(args.karpathy_split, "--karpathy-split", CocoDownloadError).is_file():
            raise CocoDownloadError(f"Karpathy split file {args.karpathy_split} does not exist; "
                                    "fix --karpathy-split.")
        archives = plan_archives(year, splits, table)
        download_coco(Path(args.out), archives, _parse_base_url(args.base_url), args.delete_archives)
        _write_splits(args, year, splits)
    except CocoDownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # disk full, permissions, ...: the environment, not a bug
        print(f"error: {error.strerror or error} ({error.filename or 'file system'}).", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


def held_out_sizes(year: str, n_val: int | None, n_test: int | None, used: bool = True) -> tuple[int, int]:
    """The val5k/test5k sizes for a release (the year's defaults for None), checked against what its val split
    holds before anything is downloaded (used=False: they are not used, e.g. with Karpathy's split)."""
    default_val, default_test = HELD_OUT_DEFAULTS[year]
    n_val, n_test = default_val if n_val is None else n_val, default_test if n_test is None else n_test
    if n_val < 0 or n_test < 0:
        raise CocoDownloadError("--n-val and --n-test must not be negative.")
    if used and n_val + n_test > VAL_IMAGES[year]:
        raise CocoDownloadError(f"val{year} has {VAL_IMAGES[year]} images, too few for --n-val {n_val} plus "
                                f"--n-test {n_test}; lower them (nothing was downloaded).")
    return n_val, n_test


def _write_splits(args: argparse.Namespace, year: str, splits: list[str]) -> None:
    """Write the Karpathy split if given, else the val5k/test5k split when val was fetched."""
    out = Path(args.out)
    if args.karpathy_split is not None:
        paths = write_karpathy_split(args.karpathy_split, out, int(year))
    elif "val" in splits:
        paths = write_val_test_split(out, int(year), args.n_val, args.n_test, args.seed)
    else:
        return
    for split, path in paths.items():
        print(f"wrote {split} split: {path}")


def _parse_year(year: object) -> str:
    if str(year) not in YEARS:
        raise CocoDownloadError(f"--year must be one of {', '.join(YEARS)}, not {year!r}.")
    return str(year)


def _parse_splits(text: str) -> list[str]:
    splits = list(dict.fromkeys(part.strip() for part in str(text).split(",") if part.strip()))
    unknown = [split for split in splits if split not in SPLITS]
    if unknown or not splits:
        raise CocoDownloadError(f"--splits must be a comma-separated list from {','.join(SPLITS)}, not {text!r}.")
    return splits


def _parse_base_url(url: str) -> str:
    if not re.match(r"^https?://[^/]+", url):
        raise CocoDownloadError(f"--base-url must be an http:// or https:// URL, not {url!r}.")
    return url.rstrip("/")


# --------------------------------------------------------------------------- plan and checksums


def load_checksums(path: Path) -> dict[str, tuple[int | None, str | None]]:
    """Read a --checksums JSON file into {archive name: (size or None, sha256)}."""
    try:
        data = json.loads(check_file(path, "--checksums", CocoDownloadError).read_text())
    except FileNotFoundError:
        raise CocoDownloadError(f"Checksums file {path} does not exist; fix --checksums.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CocoDownloadError(f"Checksums file {path} is not valid JSON ({error}); fix --checksums.") from None
    if not isinstance(data, dict):
        raise CocoDownloadError(f"Checksums file {path} must hold a JSON object mapping archive names to SHA-256.")
    return {name: _checksum_entry(path, name, value) for name, value in data.items()}


def _checksum_entry(path: Path, name: str, value: object) -> tuple[int | None, str | None]:
    size, sha256 = (value.get("size"), value.get("sha256")) if isinstance(value, dict) else (None, value)
    if not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise CocoDownloadError(f"Checksums file {path}: the entry for {name} is not a 64-digit SHA-256 hex string.")
    if size is not None and not (isinstance(size, int) and size >= 0):
        raise CocoDownloadError(f"Checksums file {path}: the size for {name} is not a byte count.")
    return size, sha256.lower()


def plan_archives(year: int | str, splits: list[str], table: dict[str, tuple[int | None, str | None]]) -> list[Archive]:
    """List the archives to fetch for year and splits, with their expected size and SHA-256."""
    def known(name: str) -> tuple[int | None, str | None]:
        return table.get(name, (None, None))

    annotations = f"annotations_trainval{year}.zip"
    captions = tuple(f"captions_{split}{year}.json" for split in splits)
    instances = tuple(f"instances_{split}{year}.json" for split in splits)
    archives = [Archive(f"annotations/{annotations}", *known(annotations), caption_files=captions,
                        instance_files=instances)]
    for split in splits:
        folder = f"{split}{year}"
        archives.append(Archive(f"zips/{folder}.zip", *known(f"{folder}.zip"), image_folder=folder))
    return archives


# --------------------------------------------------------------------------- orchestration


def download_coco(out_dir: Path, archives: list[Archive], base_url: str = DEFAULT_BASE_URL,
                  delete_archives: bool = False) -> None:
    """Download, verify and extract archives into out_dir, skipping whatever is already in place."""
    out_dir.mkdir(parents=True, exist_ok=True)
    downloads = out_dir / "downloads"
    pending = [archive for archive in archives if not is_extracted(archive, out_dir)]
    if not pending:
        print(f"Everything is already in place under {out_dir}; nothing to download or extract.")
        return
    for archive in archives:
        if archive not in pending:
            print(f"{archive.name}: already extracted, skipping.")
    check_disk_space(out_dir, _bytes_needed(pending, downloads, delete_archives))
    downloads.mkdir(exist_ok=True)
    for archive in pending:
        path = fetch_verified(archive, f"{base_url}/{archive.url_path}", downloads)
        extract_archive(archive, path, out_dir)
        if delete_archives:
            path.unlink()


def is_extracted(archive: Archive, out_dir: Path) -> bool:
    """Whether everything this tool keeps from archive is already in out_dir."""
    if archive.image_folder is not None:
        return (out_dir / "images" / archive.image_folder / EXTRACTED_MARKER).is_file()
    return all((out_dir / "annotations" / name).is_file() for name in archive.caption_files + archive.instance_files)


def _bytes_needed(archives: list[Archive], downloads: Path, delete_archives: bool = False) -> int:
    """Free space the archives need at the peak: bytes still to download plus room to extract (zipped JPEGs barely
    compress: count the archive size). With delete_archives each archive goes once extracted, so the peak is while
    the largest remaining one is extracted, beside what the earlier ones left."""
    peak = kept = 0  # kept: bytes the archives done so far still occupy beyond what was on disk before
    for archive in archives:
        if archive.size is None:
            continue  # unknown until the server answers; download_file checks it then
        final, part = downloads / archive.name, downloads / (archive.name + ".part")
        have = final.stat().st_size if final.exists() else part.stat().st_size if part.exists() else 0
        download, extracted = max(archive.size - have, 0), archive.size
        peak = max(peak, kept + download + extracted)
        kept += download + extracted - (archive.size if delete_archives else 0)
    return max(peak, kept)


def check_disk_space(where: Path, needed: int) -> None:
    """Raise CocoDownloadError if the file system holding where has less than needed bytes free."""
    free = shutil.disk_usage(where).free
    if needed > free:
        raise CocoDownloadError(f"Not enough free disk space in {where}: the COCO archives need {_human(needed)} "
                                f"to download and extract but only {_human(free)} is free; free some space or "
                                "choose another --out.")


def _human(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1000:
            return f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} TB"


def fetch_verified(archive: Archive, url: str, downloads: Path) -> Path:
    """Return downloads/<archive>, downloaded and verified; a corrupt copy is fetched again once."""
    path = downloads / archive.name
    for attempt in (1, 2):
        if not path.exists():
            download_file(url, path, archive.size)
        problem = verify_archive(path, archive.size, archive.sha256)
        if problem is None:
            return path
        path.unlink()
        if attempt == 1:
            print(f"{archive.name}: {problem}; deleted it, downloading again.", file=sys.stderr)
    raise CocoDownloadError(f"{archive.name} failed verification twice ({problem}); the server may serve a "
                            "different file: check --base-url and --checksums.")


def verify_archive(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Return None if path has the expected size and SHA-256, else what is wrong (unknown values are skipped)."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size is {actual_size} bytes, expected {size}"
    if sha256 is None:
        print(f"warning: no SHA-256 known for {path.name}; "
              f"{'checked its size only' if size is not None else 'it cannot be verified'}.", file=sys.stderr)
        return None
    with tqdm(total=actual_size, unit="B", unit_scale=True, desc=f"verifying {path.name}") as bar:
        actual = sha256_file(path, bar.update)
    if actual != sha256:
        return f"SHA-256 checksum verification failed: got {actual}, expected {sha256}"
    return None


# --------------------------------------------------------------------------- HTTP download with resume


def download_file(url: str, dest: Path, expected_size: int | None = None) -> None:
    """Download url to dest through dest.part, resuming interrupted transfers with HTTP Range requests."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _fetch_once(url, part, expected_size)
        except _Interrupted as error:
            last_error = error
            if attempt < ATTEMPTS:
                print(f"{dest.name}: transfer interrupted ({error}); trying again, attempt {attempt + 1} of "
                      f"{ATTEMPTS}.", file=sys.stderr)
            continue
        part.replace(dest)
        return
    advice = f"run the same command again to resume from {part}" if part.exists() else \
        "try again later or another --base-url (nothing was received to resume from)"
    raise CocoDownloadError(f"Downloading {url} failed {ATTEMPTS} times, the last with {last_error}; {advice}.")


def _fetch_once(url: str, part: Path, expected_size: int | None) -> None:
    """Fetch the rest of url into part; raise _Interrupted if the transfer stops early."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset >= expected_size:
        if offset == expected_size:
            return  # the previous run got every byte but stopped before renaming
        part.unlink()  # longer than the real file: not ours to trust
        offset = 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = _open(request, part)
    except urllib.error.HTTPError as error:  # only 416 gets here
        _range_not_satisfiable(error, part, offset)
        return
    with response:
        offset, total = _resume_point(response, part, offset)
        check_disk_space(part.parent, (total or 0) - offset)
        with open(part, "ab" if offset else "wb") as file, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-len(".part")]) as bar:
            _copy_body(response, file, bar)
    received = part.stat().st_size
    if total is not None and received < total:
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def _open(request: urllib.request.Request, part: Path) -> http.client.HTTPResponse:
    """Open request; turn HTTP and connection failures into one-sentence errors (416 passes through)."""
    url = request.full_url
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416:
            raise
        if error.code >= 500:  # a busy mirror: worth another try
            raise _Interrupted(f"HTTP {error.code} {error.reason}") from None
        raise CocoDownloadError(f"The server answered HTTP {error.code} ({error.reason}) for {url}; "
                                "check --base-url.") from None
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        kept = f" (the partial download {part} is kept for resuming)" if part.exists() else ""
        raise CocoDownloadError(f"Could not reach {url} ({reason}); check your network connection or "
                                f"--base-url{kept}.") from None


def _range_not_satisfiable(error: urllib.error.HTTPError, part: Path, offset: int) -> None:
    """Handle 416: part already holds the whole file, or it is bad and the transfer starts over."""
    match = re.match(r"bytes \*/(\d+)", error.headers.get("Content-Range", ""))
    if match and int(match.group(1)) == offset:
        return
    part.unlink()
    raise _Interrupted("the server refused the resume offset; starting over")


def _resume_point(response: http.client.HTTPResponse, part: Path, offset: int) -> tuple[int, int | None]:
    """Return (offset the body starts at, total file size or None) for a response to a (Range) request."""
    length = response.headers.get("Content-Length")
    length = int(length) if length is not None and length.isdigit() else None
    if response.status != 206:
        return 0, length  # no Range support (200): the body is the whole file, write it from the start
    match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != offset:
        part.unlink()
        raise _Interrupted("the server answered with a different byte range; starting over")
    total = match.group(3)
    return offset, int(total) if total != "*" else (offset + length if length is not None else None)


def _copy_body(response: http.client.HTTPResponse, file: BinaryIO, bar: tqdm) -> None:
    """Stream the response body into file; network failures become _Interrupted, disk failures stay OSError."""
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as error:
            raise _Interrupted(str(error) or type(error).__name__) from None
        if not chunk:
            return
        file.write(chunk)
        bar.update(len(chunk))


# --------------------------------------------------------------------------- extraction


def extract_archive(archive: Archive, path: Path, out_dir: Path) -> None:
    """Extract what the pipeline reads from a verified archive into out_dir."""
    try:
        with zipfile.ZipFile(path) as zip_file:
            if archive.image_folder is not None:
                _extract_images(zip_file, archive.image_folder, out_dir / "images")
            else:
                _extract_captions(zip_file, archive.caption_files, out_dir / "annotations")
                _extract_instances(zip_file, archive.instance_files, out_dir / "annotations")
    except zipfile.BadZipFile:
        raise CocoDownloadError(f"{path} is not a valid zip archive; delete it and run again.") from None


def _extract_captions(zip_file: zipfile.ZipFile, names: tuple[str, ...], annotations_dir: Path) -> None:
    members = {Path(info.filename).name: info for info in zip_file.infolist()}
    annotations_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name not in members:
            raise CocoDownloadError(f"{zip_file.filename} holds no {name}; is --base-url serving the official tree?")
        with zip_file.open(members[name]) as source, atomic_write(annotations_dir / name) as target:
            shutil.copyfileobj(source, target)  # readers never see a half-written file
        print(f"extracted {annotations_dir / name}")


def _extract_instances(zip_file: zipfile.ZipFile, names: tuple[str, ...], annotations_dir: Path) -> None:
    """Extract the instance files not already there; an archive without them only loses the CHAIR score."""
    members = {Path(info.filename).name: info for info in zip_file.infolist()}
    for name in names:
        target = annotations_dir / name
        if target.exists():
            continue  # whoever put it there, it is not replaced
        if name not in members:
            print(f"warning: {zip_file.filename} holds no {name}; evaluate.py will not report CHAIR on its "
                  "images.", file=sys.stderr)
            continue
        with zip_file.open(members[name]) as source, atomic_write(target) as target_file:
            shutil.copyfileobj(source, target_file)
        print(f"extracted {target}")


def _extract_images(zip_file: zipfile.ZipFile, folder: str, images_dir: Path) -> None:
    target = images_dir / folder
    if target.exists():
        raise CocoDownloadError(f"{target} exists but was not completed by this tool; remove it and run again.")
    staging = images_dir / f".{folder}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted extraction: redo it from scratch
    members = [info for info in zip_file.infolist() if info.filename.startswith(folder + "/")]
    if not members:
        raise CocoDownloadError(f"{zip_file.filename} holds no {folder}/ folder; is --base-url serving "
                                "the official tree?")
    for member in tqdm(members, unit="file", desc=f"extracting {folder}"):
        zip_file.extract(member, staging)  # zipfile drops absolute paths and ".." components
    (staging / folder / EXTRACTED_MARKER).write_text(f"extracted from {Path(zip_file.filename).name}\n")
    os.rename(staging / folder, target)  # atomic: images/<folder> appears whole or not at all
    shutil.rmtree(staging)
    print(f"extracted {len(members)} entries into {target}")


# --------------------------------------------------------------------------- split annotation files


def write_val_test_split(coco_dir: Path, year: int = 2014, n_val: int = 5000, n_test: int = 5000,
                         seed: int = 0) -> dict[str, Path]:
    """Split captions_val<year>.json into fixed captions_val5k<year>.json and captions_test5k<year>.json."""
    annotations_dir = Path(coco_dir) / "annotations"
    source = annotations_dir / f"captions_val{year}.json"
    data = _read_captions(source)
    images = sorted(data["images"], key=lambda image: image["id"])
    if n_val < 0 or n_test < 0 or n_val + n_test > len(images):
        raise CocoDownloadError(f"{source} has {len(images)} images, too few for n_val={n_val} plus "
                                f"n_test={n_test}; lower --n-val/--n-test.")
    random.Random(seed).shuffle(images)
    chosen = {"val": images[:n_val], "test": images[n_val:n_val + n_test]}
    paths = {}
    for split, split_images in chosen.items():
        relocated = [{**image, "file_name": _under_folder(image["file_name"], f"val{year}")}
                     for image in sorted(split_images, key=lambda image: image["id"])]
        ids = {image["id"] for image in relocated}
        annotations = [annotation for annotation in data["annotations"] if annotation["image_id"] in ids]
        paths[split] = annotations_dir / f"captions_{split}5k{year}.json"
        write_json_atomic(paths[split], _captions_json(relocated, annotations, f"COCO val{year} {split}5k split"))
    return paths


def _under_folder(file_name: str, folder: str) -> str:
    """Make file_name relative to images/ (a "/" in file_name means exactly that, see the data layout)."""
    return file_name if "/" in file_name else f"{folder}/{file_name}"


def write_karpathy_split(karpathy_json: Path, coco_dir: Path, year: int = 2014) -> dict[str, Path]:
    """Write captions_karpathy_{train,val,test}.json from Karpathy's dataset_coco.json ("restval" joins train)."""
    coco_dir = Path(coco_dir)
    official_images, official_captions = _load_official(coco_dir, year)
    splits: dict[str, list[tuple[dict, list[str]]]] = {"train": [], "val": [], "test": []}
    for entry in _read_karpathy(Path(karpathy_json)):
        image = official_images.get(entry["cocoid"]) or _image_from_karpathy(entry, coco_dir)
        captions = official_captions.get(entry["cocoid"]) or [
            sentence["raw"].strip() for sentence in entry.get("sentences", [])]
        splits[KARPATHY_SPLITS[entry["split"]]].append((image, captions))
    paths = {}
    for split, items in splits.items():
        items.sort(key=lambda item: item[0]["id"])
        annotations = [{"id": 0, "image_id": image["id"], "caption": caption}
                       for image, captions in items for caption in captions]
        for number, annotation in enumerate(annotations, start=1):
            annotation["id"] = number  # official ids and Karpathy sentids could collide: renumber
        paths[split] = coco_dir / "annotations" / f"captions_karpathy_{split}.json"
        write_json_atomic(paths[split], _captions_json([image for image, _ in items], annotations,
                                                 f"COCO Karpathy {split} split"))
    return paths


def _read_karpathy(path: Path) -> list[dict]:
    """Read and check the images of Karpathy's dataset_coco.json."""
    try:
        entries = json.loads(path.read_text())["images"]
        problems = [entry for entry in entries if not _valid_karpathy_entry(entry)]
    except FileNotFoundError:
        raise CocoDownloadError(f"Karpathy split file {path} does not exist; fix --karpathy-split.") from None
    except (ValueError, KeyError, TypeError) as error:
        raise CocoDownloadError(f"Karpathy split file {path} is not a valid dataset_coco.json ({brief(error)}).") from None
    if problems:
        raise CocoDownloadError(f"Karpathy split file {path} has {len(problems)} image entries without an integer "
                                f"cocoid, filepath, filename or a split from {', '.join(KARPATHY_SPLITS)}; "
                                f"the first is {str(problems[0])[:200]}.")
    return entries


def _valid_karpathy_entry(entry: object) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("cocoid"), int)
            and entry.get("split") in KARPATHY_SPLITS and {"filepath", "filename"} <= entry.keys())


def _load_official(coco_dir: Path, year: int) -> tuple[dict[int, dict], dict[int, list[str]]]:
    """Images (file_name made relative to images/) and captions by image id from the official caption files."""
    images: dict[int, dict] = {}
    captions: dict[int, list[str]] = {}
    for split in SPLITS:
        path = coco_dir / "annotations" / f"captions_{split}{year}.json"
        if not path.is_file():
            continue
        data = _read_captions(path)
        for image in data["images"]:
            images[image["id"]] = {"id": image["id"], "width": image.get("width", 0),
                                   "height": image.get("height", 0),
                                   "file_name": _under_folder(image["file_name"], f"{split}{year}")}
        for annotation in data["annotations"]:
            captions.setdefault(annotation["image_id"], []).append(annotation["caption"])
    return images, captions


def _image_from_karpathy(entry: dict, coco_dir: Path) -> dict:
    """An image record for an image missing from the official files; its size is read from disk if it is there."""
    file_name = f"{entry['filepath']}/{entry['filename']}"
    width = height = 0
    try:
        with Image.open(coco_dir / "images" / file_name) as picture:  # reads the header only
            width, height = picture.size
    except OSError:
        pass  # not downloaded: 0 means unknown
    return {"id": entry["cocoid"], "width": width, "height": height, "file_name": file_name}


def _read_captions(path: Path) -> dict:
    """Read a COCO captions JSON file with the project's one reader (annotations.load_coco), errors as one sentence."""
    try:
        return load_coco(path).dataset
    except FileNotFoundError:
        raise CocoDownloadError(f"{path} does not exist; download the val split first (--splits val).") from None
    except ValueError as error:
        raise CocoDownloadError(f"{error}.") from None


def _captions_json(images: list[dict], annotations: list[dict], description: str) -> dict:
    return {"info": {"description": description}, "licenses": [], "type": "captions",
            "images": images, "annotations": annotations}
