"""Success and precision plots (PNG) for several result sets, in the OTB figure style."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import CENTER_ERROR_THRESHOLDS_PX, IOU_THRESHOLDS, PRECISION_AT_PX
from .report import Evaluation


def plot_curves(evaluations: list[Evaluation], out_dir: Path, title: str = "", dpi: int = 90) -> dict[str, Path]:
    """Write ``success_plot.png`` and ``precision_plot.png``; legends sorted by score.

    Returns the paths written. Uses the Agg backend so it works without a display.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = {
        "success": (
            IOU_THRESHOLDS, "success_curve", "success_auc", "Overlap threshold", "Success rate",
            "Success plot", "AUC",
        ),
        "precision": (
            CENTER_ERROR_THRESHOLDS_PX, "precision_curve", "precision", "Location error threshold (px)",
            "Precision", "Precision plot", f"@{PRECISION_AT_PX}px",
        ),
    }
    written = {}
    for kind, (xs, curve_key, score_key, xlabel, ylabel, name, score_label) in specs.items():
        fig, ax = plt.subplots(figsize=(5.0, 4.0))
        ranked = sorted(evaluations, key=lambda ev: -np.nan_to_num(ev.overall[score_key], nan=-1.0))
        for i, ev in enumerate(ranked):
            label = f"{ev.tracker} [{score_label} {ev.overall[score_key]:.3f}]"
            # Matplotlib's colour cycle has 10 colours: the line style tells the next ten apart.
            ax.plot(xs, ev.overall[curve_key], linewidth=2, linestyle=("-", "--", ":", "-.")[i // 10 % 4], label=label)
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{name} {title}".strip())
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left" if kind == "success" else "lower right", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{kind}_plot.png"
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        written[kind] = path
    return written
