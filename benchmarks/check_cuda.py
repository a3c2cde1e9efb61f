"""CUDA against CPU: the same clicks in a Session on each device must give the same object.

The CUDA path runs the network in float16, so masks may differ at a few boundary pixels; the check
fails when the two 3D masks agree below ``--min-agreement`` (Dice of one against the other). Run it on
any machine with a GPU; without one it says so and exits with status 2.

    python benchmarks/check_cuda.py                       # synthetic CT-like scan
    python benchmarks/check_cuda.py --case a.npz ...      # cached cases (uint8 image + labels)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_limnet.clicks import dice, first_click

sys.path.insert(0, str(Path(__file__).parent))
from bench_engine import synthetic_scan  # noqa: E402


def clicks_for(ref: np.ndarray) -> list[tuple[tuple[int, int, int], bool]]:
    """The evaluation protocol's first click, then a negative click just outside the object on the
    same slice (a correction round)."""
    z, y, x = first_click(ref).point
    ring = ndimage.binary_dilation(ref[z], iterations=3) & ~ref[z]
    ys, xs = np.nonzero(ring)
    return [((z, y, x), True), ((z, int(ys[0]), int(xs[0])), False)]


def run(volume, spacing, clicks, device: str, weights) -> tuple[list[np.ndarray], float]:
    from napari_limnet import Session

    session = Session(volume, spacing=spacing, device=device, weights=weights)
    masks, start = [], time.perf_counter()
    for point, positive in clicks:
        masks.append(session.click(point, positive=positive).copy())
    assert session.undo() and np.array_equal(session.mask, masks[0]), "undo did not restore round 1"
    return masks, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="*", default=[], help="cached .npz cases (image, labels, spacing)")
    parser.add_argument("--min-agreement", type=float, default=0.95)
    args = parser.parse_args()
    import torch

    from napari_limnet.model import load_model

    if not torch.cuda.is_available():
        print("no CUDA device on this machine: nothing to check")
        return 2
    weights = load_model()
    cases = []
    for path in args.case:
        with np.load(path) as z:
            labels = z["labels"]
            label = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
            cases.append((Path(path).stem, z["image"], labels == label, tuple(float(v) for v in z["spacing"])))
    if not cases:
        vol = synthetic_scan(256, 256, 64)
        cases.append(("synthetic", vol, vol > 80, (1.0, 0.7, 0.7)))
    worst = 1.0
    for name, volume, ref, spacing in cases:
        clicks = clicks_for(ref)
        cpu, t_cpu = run(volume, spacing, clicks, "cpu", weights)
        gpu, t_gpu = run(volume, spacing, clicks, "cuda", weights)
        agreement = [dice(a, b) for a, b in zip(cpu, gpu)]
        worst = min(worst, *agreement)
        print(json.dumps({"case": name, "shape": volume.shape, "agreement_per_round": agreement,
                          "dice_cpu": [dice(m, ref) for m in cpu], "dice_cuda": [dice(m, ref) for m in gpu],
                          "seconds_cpu": round(t_cpu, 2), "seconds_cuda": round(t_gpu, 2),
                          "gpu": torch.cuda.get_device_name(0)}))
    print(f"worst CPU/CUDA agreement {worst:.4f} (minimum {args.min_agreement})")
    return 0 if worst >= args.min_agreement else 1


if __name__ == "__main__":
    sys.exit(main())
