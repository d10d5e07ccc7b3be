"""A small ring of recent frames, so a box drawn on an older frame is applied to that frame.

An operator (or a detector) picks a box on a frame it saw a moment ago; by the time the
``~/init`` request arrives the camera has moved on. The buffer keeps the last few decoded
frames, keyed by their header stamp, and hands out the ones that came after the chosen frame
so the tracker can catch up in order. It is thread-safe: the subscription adds frames on the
executor thread while the inference worker and the services read them.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from std_msgs.msg import Header


@dataclass(frozen=True)
class Frame:
    """One decoded camera frame and when it reached the node."""

    seq: int  # strictly increasing arrival number, never reused
    stamp_ns: int  # header stamp in nanoseconds
    header: Header
    rgb: np.ndarray  # (H, W, 3) uint8, read-only
    arrival: float  # time.monotonic() when the message arrived

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


class FrameBuffer:
    """Bounded, ordered-by-arrival store of the most recent frames."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"frame buffer capacity must be >= 1, got {capacity}")
        self._frames: deque[Frame] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._next_seq = 0

    @property
    def capacity(self) -> int:
        return self._frames.maxlen

    def push(self, stamp_ns: int, header: Header, rgb: np.ndarray, arrival: float) -> Frame:
        """Add a frame (evicting the oldest when full) and return it with its sequence number."""
        with self._lock:
            frame = Frame(self._next_seq, stamp_ns, header, rgb, arrival)
            self._next_seq += 1
            self._frames.append(frame)
            return frame

    def newest(self) -> Frame | None:
        with self._lock:
            return self._frames[-1] if self._frames else None

    def is_repeat(self, stamp_ns: int) -> bool:
        """True when a frame re-sent with the newest buffered frame's (non-zero) stamp arrives.

        Players and relays sometimes send a frame twice; tracking it twice would advance the
        tracker on a frame it has already seen. Cameras that leave stamps at zero are never
        treated as repeating.
        """
        with self._lock:
            return stamp_ns != 0 and bool(self._frames) and self._frames[-1].stamp_ns == stamp_ns

    def find(self, stamp_ns: int) -> Frame | None:
        """The newest buffered frame with exactly this stamp, or None."""
        with self._lock:
            for frame in reversed(self._frames):
                if frame.stamp_ns == stamp_ns:
                    return frame
            return None

    def stamp_range(self) -> tuple[int, int] | None:
        """(oldest, newest) stamps held, for error messages; None when empty."""
        with self._lock:
            if not self._frames:
                return None
            stamps = [f.stamp_ns for f in self._frames]
            return min(stamps), max(stamps)

    def after(self, seq: int) -> list[Frame]:
        """Frames that arrived after sequence number ``seq``, oldest first."""
        with self._lock:
            return [f for f in self._frames if f.seq > seq]

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)
