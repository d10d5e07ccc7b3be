"""Readers for the usual tracking training sets, plus OTB-style folders and COCO stills.

Each reader only lists sequence folders at construction; a sequence's annotation files are
parsed when it is first requested and its images when a frame is requested. So a reader over
LaSOT or TrackingNet costs a directory listing, never the dataset.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path

import numpy as np

from mixformer_ros.evaluation.datasets import otb_annotated_frames, otb_targets

from .sequence import FileSequence, Sequence, read_image_rgb

log = logging.getLogger(__name__)

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


class DataPathError(FileNotFoundError):
    """A dataset root or its expected layout is missing, or the data cannot give a training sample;
    the message names what was expected."""


def parse_box_file(path: Path) -> np.ndarray:
    """x,y,w,h per line, separated by commas, tabs or spaces; NaN lines kept as NaN."""
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        vals = [float(v) for v in re.split(r"[,\s]+", line) if v]
        if len(vals) < 4:
            raise ValueError(f"{path}: expected x,y,w,h per line, got {line!r}")
        rows.append(vals[:4])
    return np.asarray(rows, np.float32).reshape(-1, 4)


def parse_flag_file(path: Path) -> np.ndarray:
    """0/1 flags, one per frame, on one line (LaSOT) or one per line (GOT-10k)."""
    text = path.read_text()
    return np.asarray([int(float(v)) for v in re.split(r"[,\s]+", text.strip()) if v], np.int64)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXT)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataPathError(f"{what}: directory {path} does not exist")
    return path


class SequenceReader:
    """Base class: a named list of sequence folders, each turned into a Sequence on demand."""

    name = "base"

    def __init__(self, root: str | Path, names: list[str] | None = None):
        self.root = _require_dir(Path(root), f"{self.name} root")
        self._dirs = self._list_sequences()
        if names is not None:
            wanted = set(names)
            missing = wanted - {d.name for d in self._dirs}
            if missing:
                raise DataPathError(f"{self.name}: sequences not found under {self.root}: {sorted(missing)}")
            self._dirs = [d for d in self._dirs if d.name in wanted]
        if not self._dirs:
            raise DataPathError(f"{self.name}: no sequences found under {self.root}")
        self._start_cache()

    def _start_cache(self) -> None:
        self._load = functools.lru_cache(maxsize=64)(self._load_sequence)
        self._unusable: set[int] = set()  # sequences whose annotations could not be read

    # Spawned data workers receive the reader pickled; the cache (a wrapper of a bound method, which
    # pickle cannot store) stays behind and each worker starts its own.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_load"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._start_cache()

    def _list_sequences(self) -> list[Path]:
        raise NotImplementedError

    def _load_sequence(self, index: int) -> Sequence:
        raise NotImplementedError

    @property
    def sequence_names(self) -> list[str]:
        return [d.name for d in self._dirs]

    def __len__(self) -> int:
        return len(self._dirs)

    def __getitem__(self, index: int) -> Sequence:
        if not 0 <= index < len(self):
            raise IndexError(index)
        try:
            return self._load(index)
        except (ValueError, OSError) as exc:
            # One bad annotation file among thousands must not end a run hours in: the sequence is
            # left out (an empty one, which the sampler passes over) and said so once.
            if index not in self._unusable:
                self._unusable.add(index)
                log.warning("%s: sequence %s left out (%d so far): %s", self.name, self._dirs[index].name,
                            len(self._unusable), exc)
            return FileSequence(self._dirs[index].name, [], np.zeros((0, 4), np.float32))


class OTBReader(SequenceReader):
    """Folders `<root>/<seq>/img/*.jpg` with `groundtruth_rect.txt` (OTB, UAV123, our shared data).
    A folder with `groundtruth_rect.<k>.txt` (OTB-100's Jogging, Skating2, Human4) gives one
    sequence per target, `<seq>-<k>`, as the evaluation reads it."""

    name = "otb"

    def _list_sequences(self) -> list[Path]:
        # Each entry names a sequence: the folder itself, or <folder>-<k> beside it for target k.
        self._annotations = {
            d.parent / name: (d, gt_file)
            for d in sorted(self.root.iterdir()) if (d / "img").is_dir()
            for name, gt_file in otb_targets(d).items()
        }
        return list(self._annotations)

    def _load_sequence(self, index: int) -> Sequence:
        d, gt_file = self._annotations[self._dirs[index]]
        name = self._dirs[index].name
        boxes = parse_box_file(gt_file)
        images = otb_annotated_frames(d.name, _images_in(d / "img"), len(boxes))
        numbers = {int(p.stem): p for p in images if p.stem.isdigit()}
        numbered = bool(images) and len(numbers) == len(images)
        if numbered:
            images = [numbers[n] for n in sorted(numbers)]  # 9.jpg before 10.jpg
        if len(images) == len(boxes):
            return FileSequence(name, images, boxes)
        if len(images) > len(boxes):
            log.warning("%s: %d images for %d boxes; pairing them from the first image on (cut img/ if the "
                        "annotation starts later)", d, len(images), len(boxes))
        if numbered:
            # Fewer (or more) files than boxes: row i labels frame number i + 1 (i with a frame 0),
            # so a missing file is skipped where it was instead of shifting the labels after it.
            start, digits, suffix = (0 if 0 in numbers else 1), len(images[0].stem), images[0].suffix
            frames = [numbers.get(start + i, d / "img" / f"{start + i:0{digits}d}{suffix}") for i in range(len(boxes))]
            return FileSequence(name, frames, boxes)
        log.warning("%s: %d images for %d boxes and no frame numbers to pair them by; sequence left out",
                    d, len(images), len(boxes))
        return FileSequence(name, [], boxes[:0])


class GOT10kReader(SequenceReader):
    """GOT-10k: `<root>/<split>/<seq>/{0000000N.jpg, groundtruth.txt, absence.label, cover.label}`."""

    name = "got10k"

    def __init__(self, root: str | Path, split: str = "train", names: list[str] | None = None):
        self.split = split
        super().__init__(root, names)

    def _list_sequences(self) -> list[Path]:
        split_dir = _require_dir(self.root / self.split, f"GOT-10k split '{self.split}'")
        list_file = split_dir / "list.txt"
        if list_file.is_file():
            names = [n.strip() for n in list_file.read_text().splitlines() if n.strip()]
            return [split_dir / n for n in names]
        return sorted(d for d in split_dir.iterdir() if (d / "groundtruth.txt").is_file())

    def _load_sequence(self, index: int) -> Sequence:
        d = self._dirs[index]
        boxes = parse_box_file(d / "groundtruth.txt")
        visible = np.ones(len(boxes), bool)
        if (d / "absence.label").is_file():
            visible &= parse_flag_file(d / "absence.label")[: len(boxes)] == 0
        if (d / "cover.label").is_file():
            visible &= parse_flag_file(d / "cover.label")[: len(boxes)] > 0
        frames = [d / f"{i + 1:08d}.jpg" for i in range(len(boxes))]
        return FileSequence(d.name, frames, boxes, visible)


class LaSOTReader(SequenceReader):
    """LaSOT: `<root>/<class>/<class>-<k>/{img/0000000N.jpg, groundtruth.txt, full_occlusion.txt, out_of_view.txt}`."""

    name = "lasot"

    def _list_sequences(self) -> list[Path]:
        return sorted(
            s for c in self.root.iterdir() if c.is_dir() for s in c.iterdir() if (s / "groundtruth.txt").is_file()
        )

    def _load_sequence(self, index: int) -> Sequence:
        d = self._dirs[index]
        boxes = parse_box_file(d / "groundtruth.txt")
        visible = np.ones(len(boxes), bool)
        for flag in ("full_occlusion.txt", "out_of_view.txt"):
            if (d / flag).is_file():
                visible &= parse_flag_file(d / flag)[: len(boxes)] == 0
        frames = [d / "img" / f"{i + 1:08d}.jpg" for i in range(len(boxes))]
        return FileSequence(d.name, frames, boxes, visible)


class TrackingNetReader(SequenceReader):
    """TrackingNet: `<root>/TRAIN_<i>/{frames/<seq>/<n>.jpg, anno/<seq>.txt}` over the chosen chunks."""

    name = "trackingnet"

    def __init__(self, root: str | Path, chunks: list[int] | None = None, names: list[str] | None = None):
        self.chunks = chunks
        super().__init__(root, names)

    def _list_sequences(self) -> list[Path]:
        chunk_dirs = sorted(self.root.glob("TRAIN_*")) if self.chunks is None else [self.root / f"TRAIN_{i}" for i in self.chunks]
        seqs = []
        for c in chunk_dirs:
            anno = _require_dir(c / "anno", f"TrackingNet chunk {c.name}")
            seqs += [c / "frames" / a.stem for a in sorted(anno.glob("*.txt"))]
        return seqs

    def _load_sequence(self, index: int) -> Sequence:
        d = self._dirs[index]
        boxes = parse_box_file(d.parent.parent / "anno" / f"{d.name}.txt")
        frames = [d / f"{i}.jpg" for i in range(len(boxes))]
        return FileSequence(d.name, frames, boxes)


class _StillSequence(Sequence):
    """One annotated object in one still image, seen as a one-frame sequence."""

    def __init__(self, name: str, image: Path, box: np.ndarray):
        self.name = name
        self._image = image
        self.boxes = box.reshape(1, 4).astype(np.float32)
        self.visible = np.ones(1, bool)

    def frame(self, index: int) -> np.ndarray:
        return read_image_rgb(self._image)


class COCOReader:
    """COCO instances as pseudo-sequences: each non-crowd object of useful size is one still.

    Only the annotation JSON is parsed (kept as compact arrays); images are read on demand.
    """

    name = "coco"

    def __init__(self, root: str | Path, split: str = "train2017", min_area: float = 400.0):
        root = _require_dir(Path(root), "COCO root")
        ann_file = root / "annotations" / f"instances_{split}.json"
        if not ann_file.is_file():
            raise DataPathError(f"COCO: annotation file {ann_file} does not exist")
        self.image_dir = _require_dir(root / split, f"COCO images '{split}'")
        data = json.loads(ann_file.read_text())
        files = {im["id"]: im["file_name"] for im in data["images"]}
        anns = [a for a in data["annotations"]
                if not a.get("iscrowd", 0) and a["area"] >= min_area and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        self._files = [files[a["image_id"]] for a in anns]
        self._boxes = np.asarray([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        self._ids = [a["id"] for a in anns]
        if not anns:
            raise DataPathError(f"COCO: no usable annotations in {ann_file}")

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> Sequence:
        return _StillSequence(f"coco_{self._ids[index]}", self.image_dir / self._files[index], self._boxes[index])
