"""Draws training samples: one object seen through a run of evenly spaced slices (consecutive, or
thinned out as a thick-slice scan would be), from a real cached volume or a fresh synthetic one, along
any axis where the volume is isotropic, augmented."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import augment
from .data import LabelledVolume
from .synthetic import synthetic_volume

MIN_WINDOW = 16  # pixels: the smallest side of a window shown inside an object


@dataclass
class Sample:
    """Slices z0, z0 + d, z0 + 2d, ... of one object (slice 0 always contains it); |d| is the stride."""

    image: np.ndarray  # N x H x W float32
    mask: np.ndarray  # N x H x W bool
    spacing: tuple[float, float]
    anchor: int | None = None  # index of an extra slice (appended last) the "user" segmented earlier


class Sampler:
    def __init__(self, volumes: list[LabelledVolume], rng: np.random.Generator, *, synthetic_share: float,
                 pool_size: int, min_voxels: int, field_of_view_share: float = 0.3,
                 object_share: tuple[float, float] | None = None, thick_slice_share: float = 0.0,
                 max_slice_gap: float = 6.0, merged_share: float = 0.0) -> None:
        self.volumes = volumes
        self.merged_share = merged_share
        self.thick_slice_share = thick_slice_share
        self.max_slice_gap = max_slice_gap
        self.rng = rng
        self.field_of_view_share = field_of_view_share
        self.object_share = object_share
        self.synthetic_share = synthetic_share if volumes else 1.0
        self.min_voxels = min_voxels
        count = pool_size if self.synthetic_share else 0
        self.pool = [v for v in (synthetic_volume(rng, min_voxels) for _ in range(count)) if v.objects]

    def refresh(self) -> None:
        """Replace one synthetic volume, so the generator keeps producing new shapes."""
        if self.pool:
            vol = synthetic_volume(self.rng, self.min_voxels)
            if vol.objects:
                self.pool[int(self.rng.integers(len(self.pool)))] = vol

    def _volume(self) -> LabelledVolume:
        if self.pool and self.rng.random() < self.synthetic_share:
            return self.pool[int(self.rng.integers(len(self.pool)))]
        return self.volumes[int(self.rng.integers(len(self.volumes)))]

    def draw_object(self) -> tuple[LabelledVolume, int]:
        """A volume (real or synthetic, in the configured shares) and one of its objects' labels."""
        vol = self._volume()
        return vol, vol.objects[int(self.rng.integers(len(vol.objects)))]

    def _merged_with(self, vol: LabelledVolume, label: int) -> tuple[int, ...]:
        """``label`` alone, or for ``merged_share`` of the draws ``label`` together with a structure it
        touches (ventricle and myocardium, brainstem and cord): users outline unions of the structures
        an atlas separates, and the network must follow the click, not a list of anatomies."""
        if not self.merged_share or self.rng.random() >= self.merged_share:
            return (label,)
        partners = [b for a, b in vol.touching if a == label] + [a for a, b in vol.touching if b == label]
        return (label, partners[int(self.rng.integers(len(partners)))]) if partners else (label,)

    def sample(self, length: int, with_anchor: bool = False, *, crossing_share: float = 0.5) -> Sample:
        """``crossing_share`` of the sequences (length > 2) run off the end of the object, so that
        propagation learns to stop."""
        rng = self.rng
        while True:
            vol, label = self.draw_object()
            labels_of_object = self._merged_with(vol, label)
            axes = vol.reslice_axes() or (0,)
            axis = int(axes[int(rng.integers(len(axes)))]) if 0 not in axes or rng.random() < 0.5 else 0
            image, labels = np.moveaxis(vol.image, axis, 0), np.moveaxis(vol.labels, axis, 0)
            obj = np.isin(labels, labels_of_object)
            present = np.flatnonzero(obj.reshape(obj.shape[0], -1).any(1))
            n = obj.shape[0]
            d = (1 if rng.random() < 0.5 else -1) * self._stride(vol.spacing[axis], length)
            span = d * (length - 1)
            starts = present[(present + span >= 0) & (present + span < n)]
            if len(starts) == 0:
                continue
            crossing = starts[~obj[starts + span].any(axis=(1, 2))] if length > 2 else starts[:0]
            if len(crossing) and rng.random() < crossing_share:
                starts = crossing
            z0 = int(starts[int(rng.integers(len(starts)))])
            index = [z0 + d * i for i in range(length)]
            anchor = None
            if with_anchor and rng.random() < 0.3:
                anchor = len(index)
                index.append(int(present[int(rng.integers(len(present)))]))
            img, msk = image[index], obj[index]
            if img.dtype == np.uint8:
                img = img.astype(np.float32) / 255.0
            img, msk = self._field_of_view(img, msk)
            spacing = tuple(np.delete(np.asarray(vol.spacing), axis))
            img, msk, spacing = augment.geometry(rng, img, msk, spacing)
            if not msk[0].any():  # rotated out of view
                continue
            return Sample(augment.intensity(rng, img), msk, spacing, anchor)

    def _stride(self, slice_spacing: float, length: int) -> int:
        """1, or for ``thick_slice_share`` of the propagation sequences a stride drawn uniformly from
        2 to as many slices as fit in ``max_slice_gap``: the memory module otherwise sees only the
        small changes between thin slices (1 mm hippocampus, 0.6 mm atrium), and a CT or MRI with
        3-6 mm slices, where an object changes shape a lot from one slice to the next, only in ACDC."""
        if length <= 2 or not self.thick_slice_share or self.rng.random() >= self.thick_slice_share:
            return 1
        widest = int(self.max_slice_gap / slice_spacing)
        return int(self.rng.integers(2, widest + 1)) if widest >= 2 else 1

    def _field_of_view(self, img: np.ndarray, msk: np.ndarray):
        """Sometimes show only part of the slice around the object: the first click's window is the
        whole slice, and the network must read the object's size from its edges, not from how much of
        the window it fills. With ``object_share`` the window's side is the object's larger extent
        divided by a share drawn log-uniformly from that range (as far as the slice allows; a share above 1
        gives a window inside the object, as the engine's zoomed pass sees a large organ after a first
        mask that fell short); without it, each side is drawn uniformly between the object's extent and
        the slice's."""
        if self.rng.random() >= self.field_of_view_share:
            return img, msk
        h, w = msk.shape[1:]
        ys, xs = np.nonzero(msk[0])
        side = None
        if self.object_share:
            share = np.exp(self.rng.uniform(*np.log(self.object_share)))
            side = (max(np.ptp(ys), np.ptp(xs)) + 1) / share
        out = []
        for lo, hi, size in ((ys.min(), ys.max(), h), (xs.min(), xs.max(), w)):
            span = hi - lo + 1
            if side is None:
                extent = int(self.rng.integers(min(size, span + 16), size + 1))
            else:
                extent = int(np.clip(round(side), min(size, span, MIN_WINDOW), size))
            if extent >= span:
                start = int(self.rng.integers(max(0, hi + 1 - extent), min(lo, size - extent) + 1))
            else:  # a share above 1: the window lies inside the object's extent, which runs out of it
                start = int(self.rng.integers(lo, hi + 2 - extent))
            out.append(slice(start, start + extent))
        return img[:, out[0], out[1]], msk[:, out[0], out[1]]

