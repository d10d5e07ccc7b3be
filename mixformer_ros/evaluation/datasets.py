"""Readers for single-object-tracking sequence folders (OTB, GOT-10k, LaSOT, VOT).

Every reader returns a :class:`Sequence`: sorted frame paths, an ``(N, 4)`` float64 ground truth
in ``x, y, w, h`` pixels (NaN rows where a frame has no box) and an ``absent`` flag per frame.
Images are not decoded here; :meth:`Sequence.read_frame` returns OpenCV's BGR array.

Layouts recognised by :func:`load_sequence` (first match wins):

* OTB / UAV123: ``img/*.jpg`` + ``groundtruth_rect.txt`` (``,``, tab or space separated). A folder
  with several targets (OTB-100's Jogging and Skating2: ``groundtruth_rect.1.txt``, ``.2.txt``)
  gives one sequence per target, named ``Jogging-1``, ``Jogging-2``; the five OTB-100 folders
  holding more images than annotated frames (David, Football1, Freeman3, Freeman4, Diving) are cut
  to the benchmark's frame range;
* LaSOT: ``img/`` + ``groundtruth.txt`` + ``full_occlusion.txt`` / ``out_of_view.txt``
  (absent = fully occluded or out of view);
* GOT-10k: ``*.jpg`` beside ``groundtruth.txt`` (+ ``absence.label``; the test split only
  has the first box, the remaining rows read as NaN);
* VOT: ``groundtruth.txt`` with 8-value polygons (or 4-value rectangles), frames in ``color/``
  or beside it; polygons become the axis-aligned box of their corners.

:func:`load_dataset` finds sequence folders directly under the root or one level deeper (LaSOT's
``<class>/<class>-<n>`` tree).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
FORMATS = ("auto", "otb", "got10k", "lasot", "vot")
_SEPARATORS = re.compile(r"[,\s]+")
_OTB_TARGET_FILE = re.compile(r"groundtruth_rect\.(\d+)\.txt")
_OTB_TARGET_NAME = re.compile(r"(.+)-(\d+)")
# OTB-100 folders whose img/ holds more frames than were annotated: the benchmark's first and
# last frame (1-based, inclusive), as in its sequence configuration and the got10k toolkit.
_OTB_FRAME_RANGES = {"david": (300, 770), "football1": (1, 74), "freeman3": (1, 460),
                     "freeman4": (1, 283), "diving": (1, 215)}


@dataclass
class Sequence:
    """A tracking sequence on disk: frame paths with one ground-truth row per frame."""

    name: str
    frames: list[Path]
    gt: np.ndarray  # (N, 4) x, y, w, h; NaN rows where unknown
    absent: np.ndarray | None = None  # (N,) bool, True where the target is not visible
    polygons: np.ndarray | None = None  # (N, 8) VOT corners when the source had them

    def __post_init__(self):
        self.gt = np.asarray(self.gt, dtype=np.float64).reshape(-1, 4)
        if self.absent is None:
            self.absent = np.zeros(len(self.frames), dtype=bool)
        self.absent = np.asarray(self.absent, dtype=bool).reshape(-1)
        if not len(self.frames) == self.gt.shape[0] == self.absent.shape[0]:
            raise ValueError(
                f"sequence {self.name}: {len(self.frames)} frames, {self.gt.shape[0]} "
                f"ground-truth rows, {self.absent.shape[0]} absence flags"
            )
        if len(self.frames) == 0:
            raise ValueError(f"sequence {self.name} has no frames")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def init_box(self) -> np.ndarray:
        """The first frame's box, which every tracker is initialised from."""
        box = self.gt[0]
        if not (np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0):
            raise ValueError(f"sequence {self.name}: first ground-truth box {box} is not usable")
        return box

    def read_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as a BGR uint8 array (OpenCV's decoder, like every toolkit)."""
        import cv2

        image = cv2.imread(str(self.frames[index]), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot decode image {self.frames[index]}")
        return image


def read_box_file(path: Path) -> np.ndarray:
    """Rows of numbers separated by commas, tabs or spaces; empty rows (except trailing ones) and
    rows of only 'nan' (of any count) read as NaN.

    Returns a float64 array ``(N, K)``; K is the widest row (4 for boxes, 8 for polygons).
    """
    rows: list[list[float] | None] = []  # None: a row of NaN
    for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            rows.append([])
            continue
        try:
            values = [float(v) for v in _SEPARATORS.split(text) if v]
        except ValueError as exc:
            raise ValueError(f"{path}:{line_no}: cannot parse {text!r} as numbers") from exc
        rows.append(None if all(math.isnan(v) for v in values) else values)
    while rows and rows[-1] == []:
        rows.pop()
    if not any(rows):
        raise ValueError(f"{path} holds no boxes")
    width = max(len(r) for r in rows if r)
    if width not in (4, 8):
        raise ValueError(f"{path}: rows have {width} values; expected 4 (x,y,w,h) or 8 (polygon)")
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        if r and len(r) == width:
            out[i] = r
        elif r:
            raise ValueError(f"{path}:{i + 1}: {len(r)} values where the file has {width}")
    return out


def read_boxes(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A ground-truth file as ``(N, 4)`` x, y, w, h, plus its ``(N, 8)`` polygons when it holds them."""
    rows = read_box_file(path)
    if rows.shape[1] == 8:
        return polygon_to_xywh(rows), rows
    return rows, None


def polygon_to_xywh(poly: np.ndarray) -> np.ndarray:
    """Axis-aligned box of polygon corners: x=min(xs), y=min(ys), w/h = max - min."""
    poly = np.asarray(poly, dtype=np.float64).reshape(-1, 8)
    xs, ys = poly[:, 0::2], poly[:, 1::2]
    x0, y0 = xs.min(axis=1), ys.min(axis=1)
    return np.stack([x0, y0, xs.max(axis=1) - x0, ys.max(axis=1) - y0], axis=1)


def read_flags(path: Path, n: int) -> np.ndarray:
    """0/1 labels, one per frame, written one per line or comma separated (LaSOT, GOT-10k)."""
    values = [v for v in _SEPARATORS.split(Path(path).read_text().strip()) if v]
    flags = np.array([int(float(v)) for v in values], dtype=bool)
    if flags.shape[0] != n:
        raise ValueError(f"{path}: {flags.shape[0]} labels for {n} frames")
    return flags


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder sorted by name (toolkit frame names are zero-padded)."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _fit_rows(gt: np.ndarray, n: int, name: str) -> np.ndarray:
    """Pad a ground truth shorter than the frame list with NaN (GOT-10k test gives 1 row)."""
    if gt.shape[0] > n:
        raise ValueError(f"sequence {name}: {gt.shape[0]} ground-truth rows for {n} frames")
    if gt.shape[0] < n:
        gt = np.vstack([gt, np.full((n - gt.shape[0], gt.shape[1]), np.nan)])
    return gt


def otb_targets(folder: Path) -> dict[str, Path]:
    """Sequence name -> ground-truth file of an OTB folder: ``{folder name: groundtruth_rect.txt}``,
    or one ``<folder name>-<k>`` per ``groundtruth_rect.<k>.txt`` of a multi-target folder."""
    folder = Path(folder)
    if (folder / "groundtruth_rect.txt").exists():
        return {folder.name: folder / "groundtruth_rect.txt"}
    numbered = sorted((int(m.group(1)), p) for p in folder.glob("groundtruth_rect.*.txt")
                      if (m := _OTB_TARGET_FILE.fullmatch(p.name)))
    return {f"{folder.name}-{k}": p for k, p in numbered}


def read_otb(folder: Path, name: str | None = None, gt_file: Path | None = None) -> Sequence:
    """OTB / UAV123 style: ``img/`` + ``groundtruth_rect.txt`` (or ``gt_file``, one target of a
    multi-target folder)."""
    folder = Path(folder)
    if gt_file is None:
        targets = otb_targets(folder)
        if len(targets) != 1:
            raise ValueError(f"{folder} holds {len(targets)} targets; load one of them: {', '.join(targets)}")
        (name_of_target, gt_file), = targets.items()
        name = name or name_of_target
    gt, polygons = read_boxes(gt_file)
    frames = otb_annotated_frames(folder.name, list_images(folder / "img"), gt.shape[0])
    return Sequence(name or folder.name, frames, gt, polygons=polygons)


def otb_annotated_frames(folder_name: str, frames: list, num_boxes: int) -> list:
    """The frames an OTB folder's boxes label: all of them, or the benchmark's range for the five
    OTB-100 folders that hold more images than annotated frames."""
    frame_range = _OTB_FRAME_RANGES.get(folder_name.lower())
    if frame_range is not None and len(frames) > num_boxes:
        return frames[frame_range[0] - 1 : frame_range[1]]
    return frames


def read_lasot(folder: Path, name: str | None = None) -> Sequence:
    """LaSOT: ``img/`` + ``groundtruth.txt``; absent = full occlusion or out of view."""
    folder = Path(folder)
    frames = list_images(folder / "img")
    gt = read_box_file(folder / "groundtruth.txt")
    absent = np.zeros(len(frames), dtype=bool)
    for label in ("full_occlusion.txt", "out_of_view.txt"):
        if (folder / label).exists():
            absent |= read_flags(folder / label, len(frames))
    return Sequence(name or folder.name, frames, gt, absent)


def read_got10k(folder: Path, name: str | None = None) -> Sequence:
    """GOT-10k: frames beside ``groundtruth.txt``; ``absence.label`` 1 = target absent."""
    folder = Path(folder)
    frames = list_images(folder)
    gt = _fit_rows(read_box_file(folder / "groundtruth.txt"), len(frames), folder.name)
    absent = None
    if (folder / "absence.label").exists():
        absent = read_flags(folder / "absence.label", len(frames))
    return Sequence(name or folder.name, frames, gt, absent)


def read_vot(folder: Path, name: str | None = None) -> Sequence:
    """VOT: ``groundtruth.txt`` polygons (or rectangles); frames in ``color/`` or beside it."""
    folder = Path(folder)
    image_dir = folder / "color" if (folder / "color").is_dir() else folder
    frames = list_images(image_dir)
    gt, polygons = read_boxes(folder / "groundtruth.txt")
    return Sequence(name or folder.name, frames, gt, polygons=polygons)


_READERS = {"otb": read_otb, "got10k": read_got10k, "lasot": read_lasot, "vot": read_vot}


def detect_format(folder: Path) -> str:
    """Guess the layout of a sequence folder from the files it holds."""
    folder = Path(folder)
    if otb_targets(folder) and (folder / "img").is_dir():
        return "otb"
    if (folder / "groundtruth.txt").exists():
        if (folder / "full_occlusion.txt").exists() or (folder / "out_of_view.txt").exists():
            return "lasot"
        if (folder / "absence.label").exists() or (folder / "meta_info.ini").exists():
            return "got10k"
        if (folder / "color").is_dir() or read_box_file(folder / "groundtruth.txt").shape[1] == 8:
            return "vot"
        return "lasot" if (folder / "img").is_dir() else "got10k"
    raise ValueError(
        f"{folder} is not a sequence folder I know: expected img/ + groundtruth_rect.txt (OTB), "
        "groundtruth.txt + full_occlusion.txt (LaSOT), frames + groundtruth.txt + absence.label "
        "(GOT-10k) or groundtruth.txt polygons (VOT)"
    )


def _holds_a_sequence(folder: Path) -> bool:
    """Whether the folder has the annotation file of one of the layouts."""
    return bool(otb_targets(folder)) or (folder / "groundtruth.txt").exists()


def load_sequence(folder, fmt: str = "auto", name: str | None = None) -> Sequence:
    """Read one sequence folder in the given (or detected) layout. ``<folder>-<k>`` names target k
    of a multi-target OTB folder (``OTB100/Jogging-1``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    folder = Path(folder)
    if not folder.is_dir():
        target = _OTB_TARGET_NAME.fullmatch(folder.name)
        if target is not None and fmt in ("auto", "otb"):
            parent = folder.with_name(target.group(1))
            gt_file = otb_targets(parent).get(folder.name) if parent.is_dir() else None
            if gt_file is not None:
                return read_otb(parent, name or folder.name, gt_file)
        raise FileNotFoundError(f"sequence folder {folder} does not exist")
    if fmt == "auto":
        fmt = detect_format(folder)
    return _READERS[fmt](folder, name)


def _sequence_folders(root: Path) -> list[Path]:
    """Sequence folders directly under ``root``, else one level deeper (LaSOT: class/class-n)."""
    children = sorted(p for p in root.iterdir() if p.is_dir())
    found = [p for p in children if _holds_a_sequence(p)]
    if found:
        return found
    return [p for child in children for p in sorted(child.iterdir()) if p.is_dir() and _holds_a_sequence(p)]


def _load_folder(folder: Path, fmt: str) -> list[Sequence]:
    """Every sequence of one folder: one, or one per target of a multi-target OTB folder."""
    if fmt in ("auto", "otb") and (folder / "img").is_dir():
        targets = otb_targets(folder)
        if targets:
            return [read_otb(folder, name, gt_file) for name, gt_file in targets.items()]
    return [load_sequence(folder, fmt)]


def load_dataset(root, fmt: str = "auto", names: list[str] | None = None) -> list[Sequence]:
    """Every sequence under ``root`` (or only ``names``), sorted by folder name.

    ``root`` may also be a single sequence folder, which gives its sequence(s).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if names is not None:
        return [load_sequence(root / n, fmt) for n in names]
    if _holds_a_sequence(root):
        return _load_folder(root, fmt)  # a broken one says what is wrong with it
    sequences = []
    for folder in _sequence_folders(root):
        try:
            sequences.extend(_load_folder(folder, fmt))
        except ValueError as exc:
            log.warning("skipping %s: %s", folder, exc)
    if not sequences:
        raise ValueError(f"no sequence folder found under {root} or one level below it")
    return sequences
