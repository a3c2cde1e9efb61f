"""Engine speed and memory: time to the clicked slice's 2D mask, time to the full 3D result,
slices/s, peak RSS and (on CUDA) peak GPU memory, for three volume sizes.

Each size runs in its own process so that peak RSS belongs to that size alone. Figures are medians
over ``--runs`` clicks on a fresh Session each (the first click of a session: no cached features).

    python benchmarks/bench_engine.py                   # all sizes, table + benchmarks/results/engine.json
    python benchmarks/bench_engine.py --sizes 256x256x64 --runs 5 --device cpu
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = ("256x256x64", "512x512x200", "512x512x800")  # x, y, slices


def synthetic_scan(nx: int, ny: int, nz: int, seed: int = 0) -> np.ndarray:
    """A CT-like float32 volume (HU): a body disc with a soft-tissue tube running through ~90% of the
    slices, so that propagation has to cover nearly the whole volume."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:ny, :nx].astype(np.float32)
    body = ((yy - ny / 2) / (0.45 * ny)) ** 2 + ((xx - nx / 2) / (0.45 * nx)) ** 2 <= 1
    vol = np.empty((nz, ny, nx), dtype=np.float32)
    for z in range(nz):
        t = z / max(nz - 1, 1)
        cy = ny / 2 + 0.1 * ny * np.sin(2 * np.pi * t)
        cx = nx / 2 + 0.1 * nx * np.cos(2 * np.pi * t)
        r = 0.12 * min(nx, ny) * (0.6 + 0.4 * np.sin(np.pi * min(max((t - 0.05) / 0.9, 0), 1)))
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r if 0.05 <= t <= 0.95 else np.zeros_like(body)
        sl = np.where(body, 40.0, -1000.0) + np.where(inside, 90.0, 0.0)
        vol[z] = sl + rng.normal(0, 15, (ny, nx)).astype(np.float32)
    return vol


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(size: str, runs: int, device: str, fusion: str = "default") -> dict:
    import torch

    from napari_limnet import Session
    from napari_limnet.model import load_model

    nx, ny, nz = (int(v) for v in size.split("x"))
    volume = synthetic_scan(nx, ny, nz)
    weights = load_model()
    first, total, slices, second_first, second_total = [], [], [], [], []
    rss_before = peak_rss_mb()
    gpu_peak = None
    for _ in range(runs):
        # reach=math.inf: the tube is long, and the worst case (propagation through the whole volume) is timed
        options = {} if fusion == "default" else {"fusion": fusion == "on"}
        session = Session(volume, spacing=(1.0, 0.7, 0.7), device=device, weights=weights, reach=math.inf, **options)
        if session.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        t_first = None
        tube_centre = (nz // 2, ny / 2, nx / 2 - 0.1 * nx)  # where synthetic_scan's tube is at mid-volume
        for _ in session.click_iter(tube_centre):
            if t_first is None:
                t_first = time.perf_counter() - start
        total.append(time.perf_counter() - start)
        first.append(t_first)
        slices.append(session.last_timing.slices_propagated + 1)
        # a correction on the same slice: its features come from the cache
        session.click((nz // 2, ny / 2, nx / 2), positive=False)
        second_first.append(session.last_timing.first_mask_s)
        second_total.append(session.last_timing.total_s)
        if session.device.type == "cuda":
            gpu_peak = max(gpu_peak or 0, torch.cuda.max_memory_allocated() / 2**20)
        dev = str(session.device)
    volume_mb = volume.nbytes / 2**20
    return {
        "size": size, "device": dev, "runs": runs, "threads": torch.get_num_threads(),
        "first_mask_s": statistics.median(first), "total_s": statistics.median(total),
        "second_click_mask_s": statistics.median(second_first), "second_click_total_s": statistics.median(second_total),
        "slices": int(statistics.median(slices)), "slices_per_s": statistics.median(slices) / statistics.median(total),
        "volume_mb": volume_mb, "peak_rss_mb": peak_rss_mb(), "rss_before_session_mb": rss_before,
        "rss_budget_mb": 2 * volume_mb + 1024, "gpu_peak_mb": gpu_peak,
        "weights": weights[1].describe(), "fusion": session.fusion,
    }


def table(rows: list[dict]) -> str:
    lines = ["| volume (x*y*slices) | device | 2D mask s | 3D result s | slices/s | 2nd click: 2D / 3D s "
             "| peak RSS MB | budget MB | GPU MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gpu = f"{r['gpu_peak_mb']:.0f}" if r["gpu_peak_mb"] else "-"
        lines.append(f"| {r['size']} | {r['device']} | {r['first_mask_s']:.3f} | {r['total_s']:.2f} | "
                     f"{r['slices_per_s']:.0f} | {r['second_click_mask_s']:.3f} / {r['second_click_total_s']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['rss_budget_mb']:.0f} | {gpu} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fusion", choices=("default", "on", "off"), default="default",
                        help="Multi-Round Result Fusion (the second click's rounds overlap on every slice)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child-process mode: measure one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.runs, args.device, args.fusion)))
        return 0
    rows = []
    for size in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", size, "--runs", str(args.runs), "--device",
                               args.device, "--fusion", args.fusion], capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{size}: {rows[-1]['total_s']:.2f} s", file=sys.stderr)
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": __import__("os").cpu_count()}, "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
