"""A data folder full of the files real X-ray dumps contain: each bad one is either used or skipped with a reason.

``make_bad_tree(root, layout)`` writes a Kaggle-layout (``chest_xray/train/{NORMAL,PNEUMONIA}``) or class-folder tree
of good synthetic images plus one file per case, and returns the cases with what should happen to each.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str  # the case, as the report names it
    path: Path | None  # the file made (None: a folder case with no file of its own)
    expect: str  # "used", "skipped" or "ignored" (hidden files: by design never listed)
    reason: str = ""  # a fragment of the skipped reason expected


def _good(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A smooth random gray image (a good, decodable file)."""
    base = rng.integers(0, 255, size=(8, 8), dtype=np.uint8)
    return Image.fromarray(base).resize((size, size), Image.BILINEAR)


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_bad_tree(root: Path, layout: str = "kaggle", n_good: int = 24, seed: int = 0) -> tuple[Path, list[Case]]:
    """Write the tree; return (the folder to pass as --data, the bad cases). ``layout``: kaggle or classes."""
    rng = np.random.default_rng(seed)
    if layout == "kaggle":
        data = root / "chest_xray"
        normal, pneu = data / "train" / "NORMAL", data / "train" / "PNEUMONIA"
        good_names = [("IM-{:04d}-0001.jpeg", normal), ("person{}_bacteria_1.jpeg", pneu)]
    else:
        data = root / "classes"  # not NORMAL+PNEUMONIA (that is a Kaggle layout): folder names map to labels
        normal, pneu = data / "normal", data / "bacteria"
        good_names = [("n{:03d}.png", normal), ("p{:03d}.png", pneu)]
    normal.mkdir(parents=True)
    pneu.mkdir(parents=True)
    for i in range(n_good):
        for pattern, folder in good_names:
            img = _good(rng)
            path = folder / pattern.format(i + 1)
            path.write_bytes(_png_bytes(img) if path.suffix == ".png" else _jpeg_bytes(img))

    cases: list[Case] = []

    def add(name: str, rel: str, content: bytes | None, expect: str, reason: str = "") -> Path:
        path = (normal if rel.startswith("N/") else pneu) / rel[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is not None:
            path.write_bytes(content)
        cases.append(Case(name, path, expect, reason))
        return path

    good = _good(rng)
    add("empty file", "N/IM-0901-0001.jpeg", b"", "skipped", "empty file")
    add("truncated JPEG", "N/IM-0902-0001.jpeg", _jpeg_bytes(good)[:600], "skipped", "truncated JPEG")
    add(
        "text file named .jpeg",
        "N/IM-0903-0001.jpeg",
        b"this is not an image\n" * 20,
        "skipped",
        "not a recognised image",
    )
    add("PNG named .jpg", "N/IM-0904-0001.jpg", _png_bytes(good), "used")
    arr16 = (np.asarray(good, dtype=np.uint16) * 16).astype(np.uint16)  # 12 significant bits
    import cv2

    add("16-bit PNG", "N/IM-0905-0001.png", cv2.imencode(".png", arr16)[1].tobytes(), "used")
    add("RGBA PNG", "N/IM-0906-0001.png", _png_bytes(good.convert("RGBA")), "used")
    add("CMYK JPEG", "N/IM-0907-0001.jpeg", _jpeg_bytes(good.convert("CMYK")), "used")
    add("1x1 image", "N/IM-0908-0001.png", _png_bytes(Image.new("L", (1, 1), 128)), "used")
    big = Image.new("L", (8000, 8000), 90)
    big.paste(good.resize((800, 800)), (3600, 3600))
    add("8000x8000 JPEG", "P/person901_bacteria_1.jpeg", _jpeg_bytes(big, quality=70), "used")
    add("name with spaces", "P/person902_bacteria 1 copy.jpeg", _jpeg_bytes(_good(rng)), "used")
    add("non-ASCII name", "P/person903_bacteria_ñandú_лёгкие.jpeg", _jpeg_bytes(_good(rng)), "used")
    add("hidden .DS_Store", "N/.DS_Store", b"\x00\x00\x00\x01Bud1", "ignored")
    add("hidden ._ resource fork", "N/._IM-0001-0001.jpeg", b"\x00\x05\x16\x07", "ignored")
    add("non-image file", "N/notes.txt", b"radiologist notes", "skipped", "not an image extension")
    add("image in a nested folder", "P/extra/deeper/person904_bacteria_1.jpeg", _jpeg_bytes(_good(rng)), "used")
    if layout == "kaggle":
        odd = data / "train" / "OTHER"
        odd.mkdir()
        (odd / "IM-0999-0001.jpeg").write_bytes(_jpeg_bytes(_good(rng)))
        cases.append(Case("unexpected folder in a Kaggle split", odd, "skipped", "unexpected folder"))
        (data / "test" / "NORMAL").mkdir(parents=True)  # an empty class folder
        (data / "test" / "PNEUMONIA").mkdir(parents=True)
        cases.append(Case("empty class folder", None, "used"))
    else:
        (data / "virus").mkdir()  # an empty class folder: a label with no images
        cases.append(Case("empty class folder", None, "used"))
        (data / "stray.jpeg").write_bytes(_jpeg_bytes(_good(rng)))
        cases.append(Case("image outside any class folder", data / "stray.jpeg", "skipped", "outside any class"))
    # Unreadable: chmod 000 blocks reads except for root, where a FIFO and a directory named .jpg stand in.
    locked = add("unreadable file (chmod 000)", "N/IM-0909-0001.jpeg", _jpeg_bytes(good), "skipped", "")
    os.chmod(locked, 0)
    if os.access(locked, os.R_OK):  # root: the file is readable after all, and is used
        cases[-1] = Case("unreadable file (chmod 000; readable as root)", locked, "used")
    else:
        cases[-1] = Case("unreadable file (chmod 000)", locked, "skipped", "cannot read file")
    fifo = normal / "IM-0910-0001.jpeg"
    os.mkfifo(fifo)
    cases.append(Case("FIFO named .jpeg", fifo, "skipped", "not a regular file"))
    folder_jpg = normal / "IM-0911-0001.jpg"
    folder_jpg.mkdir()
    cases.append(Case("folder named .jpg (empty)", folder_jpg, "ignored"))
    link = pneu / "person905_bacteria_link.jpeg"
    os.symlink(normal / "IM-0001-0001.jpeg" if layout == "kaggle" else normal / "n001.png", link)
    cases.append(Case("symlink to an image of another class", link, "skipped", "already listed"))
    os.symlink(pneu / "missing.jpeg", normal / "IM-0912-0001.jpeg")
    cases.append(Case("broken symlink", normal / "IM-0912-0001.jpeg", "skipped", "not a regular file"))
    loop = pneu / "loop"
    os.symlink(pneu, loop)
    cases.append(Case("symlink loop", loop, "skipped", "symlink loop"))
    return data, cases


def visible_files(data: Path) -> list[Path]:
    """Every non-hidden file-system entry that is not a directory (what a user would count as 'files found'),
    without following links into folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(data):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
    return found
