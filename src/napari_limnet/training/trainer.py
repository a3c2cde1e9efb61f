"""The training loop: stages in order, checkpoints with resume, a JSONL log, periodic validation,
and export of the best weights into the package after every stage (so something always ships)."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..engine.fusion import PREFERRED_MARGIN
from ..model import LimNet, LimNetConfig, count_parameters, extended, load_model, save_weights
from .config import StageConfig, TrainConfig, resolve
from .data import build_cache, load_cached, val_volumes
from .distributed import Ranks
from .pack import read_pack
from .round_candidates import Candidates, decision_gain, harvest_object, head_loss, predict
from .sampler import Sampler
from .steps import QualityBuffer, interaction_step, propagation_step, quality_loss
from .synthetic import synthetic_volume
from .validation import evaluate_objects, summarize, val_objects

VAL_SOURCES_EXTRA = ("pyradiomics_testcases",)  # validation only: no train cases, other anatomy


def lr_factor(progress: float, warmup: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to 5 %."""
    if progress < warmup:
        return (progress + 1e-3) / warmup
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def make_optimizer(net: LimNet, stage: StageConfig, added: frozenset[str] = frozenset()) -> torch.optim.Optimizer:
    """``added``: names of the parameters that the init weights lacked (they learn ``added_lr_scale``
    times faster, so that a module that starts as a no-op catches up within a fine-tuning run)."""
    if stage.kind in ("quality", "fusion"):
        groups = [{"params": list(net.quality.parameters()), "scale": 1.0}]
    else:
        encoder = list(net.encoder.parameters())
        ids = {id(p) for p in encoder}
        named = [(n, p) for n, p in net.named_parameters() if id(p) not in ids]
        groups = [{"params": encoder, "scale": stage.encoder_lr_scale},
                  {"params": [p for n, p in named if n not in added], "scale": 1.0}]
        if added:  # a third group only then, so that checkpoints of runs without one still resume
            groups.append({"params": [p for n, p in named if n in added], "scale": stage.added_lr_scale})
    return torch.optim.AdamW(groups, lr=stage.lr, weight_decay=1e-4)


class Trainer:
    def __init__(self, config: TrainConfig, base: Path, log=print, ranks: Ranks | None = None) -> None:
        self.config = config
        self.log = log
        self.ranks = ranks or Ranks()
        self.run_dir = resolve(base, config.run_dir) / config.name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.export_path = resolve(base, config.export_path) if config.export_path else None
        if self.ranks.world > 1 and any(stage.kind == "fusion" for stage in config.stages):
            raise ValueError("a fusion stage runs in one process (its harvest is the engine's own rounds): "
                             "run it without a launcher")
        self.device = self.ranks.device(config.device)
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        # every process draws its own samples; rank 0 draws what a single process would
        self.rng = np.random.default_rng(config.seed if self.ranks.lead else [config.seed, self.ranks.rank])
        self.added: frozenset[str] = frozenset()
        if config.init_weights:  # fine-tuning: start from earlier weights (a checkpoint, if any, wins)
            net = load_model(resolve(base, config.init_weights), allow_random=False)[0]
            if config.network:
                net, added = extended(net, **config.network)
                self.added = frozenset(added)
            self.net = net.to(self.device)
        else:
            self.net = LimNet(LimNetConfig(**config.network)).to(self.device)
        self.parallel = self.ranks.data_parallel(self.net)
        self.buffer = QualityBuffer(crop=self.net.config.crop)
        self.use_amp = config.amp and self.device.type == "cuda"
        data_root = resolve(base, config.data_root)
        train_volumes, val_vols = [], []
        if config.sources and (data_root / "pack.json").exists():  # a training pack (training/pack.py)
            train_volumes, val_vols = read_pack(data_root, config.sources, config.min_object_voxels)
        elif config.sources and (data_root / "splits.json").exists():
            cache = resolve(base, config.cache_dir)
            if self.ranks.local_lead:  # one writer per machine; the others read what it wrote
                build_cache(data_root, cache, config.sources, max_cases=config.max_cases_per_source)
            self.ranks.barrier()
            paths = build_cache(data_root, cache, config.sources, max_cases=config.max_cases_per_source)
            train_volumes = load_cached(paths, config.min_object_voxels)
            val_vols = val_volumes(data_root, (*config.sources, *VAL_SOURCES_EXTRA), config.min_object_voxels,
                                   max_cases=max(2, config.val_objects))
        if not val_vols:  # no real data: validate on held-out synthetic volumes (own seed)
            vrng = np.random.default_rng(config.seed + 1)
            val_vols = [v for v in (synthetic_volume(vrng) for _ in range(config.val_objects)) if v.objects]
        self.val_set = val_objects(val_vols, config.val_objects, np.random.default_rng(config.seed + 2))
        self.sampler = Sampler(train_volumes, self.rng, synthetic_share=config.synthetic_share,
                               pool_size=config.synthetic_pool, min_voxels=config.min_object_voxels,
                               field_of_view_share=config.field_of_view_share,
                               object_share=config.object_share,
                               thick_slice_share=config.thick_slice_share, max_slice_gap=config.max_slice_gap,
                               merged_share=config.merged_share)
        self._write({"event": "start", "device": str(self.device), "parameters": count_parameters(self.net),
                     "ranks": self.ranks.world, "train_volumes": len(train_volumes),
                     "val_objects": len(self.val_set),
                     "config": config.to_dict()})

    # --- bookkeeping ----------------------------------------------------------------------------
    def _write(self, record: dict) -> None:
        if not self.ranks.lead:
            return
        record = {"time": round(time.time(), 1), **record}
        with open(self.run_dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        self.log(json.dumps(record)[:400])

    def _autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _save_checkpoint(self, stage: int, step: int, elapsed: float, opt, best) -> None:
        if not self.ranks.lead:
            return
        state = {"model": self.net.state_dict(), "optimizer": opt.state_dict() if opt else None,
                 "stage": stage, "step": step, "elapsed": elapsed, "best": best,
                 "np_rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
        tmp = self.run_dir / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.run_dir / "checkpoint.pt")

    def _load_checkpoint(self):
        """The lead's checkpoint, in every process (the others need not see the lead's disk)."""
        path = self.run_dir / "checkpoint.pt"
        state = None
        if self.ranks.lead and path.exists():
            # Our own file, written by _save_checkpoint: it holds numpy RNG state, hence weights_only=False.
            state = torch.load(path, map_location="cpu", weights_only=False)
        state = self.ranks.from_lead(state)
        if state is None:
            return None
        self.net.load_state_dict(state["model"])
        if self.ranks.lead:  # the others go on from their own seeds: their draws are not saved
            self.rng.bit_generator.state = state["np_rng"]
            torch.set_rng_state(state["torch_rng"])
        return state

    def _load_best(self):
        """The stage's best weights so far, as the lead saved them (None if it has none)."""
        path = self.run_dir / "best_of_stage.pt"
        state = None
        if self.ranks.lead and path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
        return self.ranks.from_lead(state)

    def _export(self, stage: StageConfig, step: int, summary: dict) -> None:
        if self.export_path is None or not self.ranks.lead:
            return
        meta = {"name": self.config.export_name, "train_config": self.config.name, "stage": stage.kind,
                "step": step, "val": {k: round(v, 4) for k, v in summary.items()}}
        sha = save_weights(self.net.cpu(), self.export_path, meta)
        self.net.to(self.device)
        self._write({"event": "export", "path": str(self.export_path), "sha256": sha, "stage": stage.kind,
                     "step": step})

    def validate(self) -> dict:
        """Each process evaluates its share of the val objects; all get the same summary."""
        self.ranks.average_buffers(self.net)
        with self._autocast():
            rows = evaluate_objects(self.net, self.ranks.share(self.val_set), self.device)
        return summarize(self.ranks.gather(rows))

    # --- steps ----------------------------------------------------------------------------------
    def _samples(self, stage: StageConfig, progress: float, interaction: bool):
        if interaction:
            return [self.sampler.sample(2) for _ in range(stage.batch)]
        lo, hi = stage.seq_len
        length = int(round(lo + (hi - lo) * progress))
        return [self.sampler.sample(length + 1, with_anchor=True, crossing_share=stage.crossing_share)
                for _ in range(stage.batch)]

    def _step(self, stage: StageConfig, progress: float) -> dict:
        interaction = stage.kind == "interaction" or (
            stage.kind == "quality" and self.rng.random() < 0.5) or (
            stage.kind == "memory" and self.rng.random() < stage.interaction_mix)
        samples = self._samples(stage, progress, interaction)
        kw = {"buffer": self.buffer, "device": self.device, "autocast": self._autocast}
        # quality stage: the frozen model produces masks; only the quality head learns
        learner = self.net.quality if stage.kind == "quality" else self.net
        self.net.eval()
        learner.train()
        if stage.freeze_norm:
            for module in learner.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eval()
        with contextlib.nullcontext() if learner is self.net else torch.no_grad():
            seg = (interaction_step(self.net, samples, self.rng, max_rounds=self.config.max_clicks, **kw)
                   if interaction else propagation_step(self.net, samples, self.rng, **kw))
        with self._autocast():
            q = quality_loss(self.net, self.buffer, self.rng, 4 * stage.batch, self.device)
        loss = q if stage.kind == "quality" else seg + q
        return {"loss": loss, "seg": float(seg.detach()), "quality": float(q.detach()),
                "task": "int" if interaction else "mem"}

    def run(self, resume: bool = True) -> Path:
        state = self._load_checkpoint() if resume else None
        start_stage = state["stage"] if state else 0
        for si, stage in enumerate(self.config.stages):
            if si < start_stage:
                continue
            opt = make_optimizer(self.net, stage, self.added)
            step, elapsed, best = 0, 0.0, None
            if state and si == start_stage:
                step, elapsed, best = state["step"], state["elapsed"], state["best"]
                if state["optimizer"] is not None:
                    opt.load_state_dict(state["optimizer"])
            self._write({"event": "stage", "stage": si, "kind": stage.kind, "from_step": step})
            if stage.kind == "fusion":  # restarts from the stage's start; its harvest is kept on disk
                self._export(stage, stage.steps, self._fusion_stage(si, stage))
                self._save_checkpoint(si + 1, 0, 0.0, None, None)
                state = None
                continue
            best_state = self._load_best() if best is not None else None
            if best_state is None:
                best_state = copy.deepcopy(self.net.state_dict())
            if best is None and stage.kind != "quality":  # a stage never ships worse weights than it began with
                best, best_state = self._validate_keep_best(si, stage, 0, best, best_state)
            t0 = time.time() - elapsed
            cap = stage.max_minutes * 60
            running = {}
            while step < stage.steps and not (cap and elapsed >= cap):
                progress = max(step / stage.steps, elapsed / cap if cap else 0.0)
                for group in opt.param_groups:
                    group["lr"] = stage.lr * group["scale"] * lr_factor(progress)
                out = self.parallel(self._step, stage, progress)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                elapsed = self.ranks.mean(time.time() - t0)
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
                opt.step()
                step += 1
                if step % 4 == 0:
                    self.sampler.refresh()
                for k in ("seg", "quality"):
                    running.setdefault(f"{out['task']}_{k}", []).append(out[k])
                if step % 10 == 0 or step == stage.steps:
                    self._write({"event": "train", "stage": si, "kind": stage.kind, "step": step,
                                 "lr": round(opt.param_groups[-1]["lr"], 6),
                                 "elapsed_s": round(elapsed, 1),
                                 **{k: round(float(np.mean(v)), 4) for k, v in running.items()}})
                    running = {}
                if step % self.config.val_every == 0:
                    best, best_state = self._validate_keep_best(si, stage, step, best, best_state)
                if step % self.config.checkpoint_every == 0:
                    self.ranks.average_buffers(self.net)
                    self._save_checkpoint(si, step, elapsed, opt, best)
            if stage.kind == "quality":
                summary = self.validate()
                self._write({"event": "val", "stage": si, "kind": stage.kind, "step": step, **summary})
            else:
                best, best_state = self._validate_keep_best(si, stage, step, best, best_state)
                self.net.load_state_dict(best_state)
                summary, step = best["summary"], best["step"]
            self._export(stage, step, summary)
            self._save_checkpoint(si + 1, 0, 0.0, None, None)
            state = None
        self._write({"event": "done"})
        return self.run_dir

    # --- the fusion stage ------------------------------------------------------------------------
    def _harvest(self, si: int, name: str, objects, clicks: int) -> Candidates:
        """Round candidates of (volume, ref, spacing) objects, read back from the run folder when a
        restarted stage has them already."""
        path = self.run_dir / f"rounds-{si}-{name}.pt"
        if path.exists():
            return Candidates.from_dict(torch.load(path, weights_only=True))
        self.net.eval()
        parts = []
        for i, (volume, ref, spacing) in enumerate(objects):
            parts.append(harvest_object(self.net, volume, ref, spacing, clicks, self.device))
            if (i + 1) % 10 == 0:
                self._write({"event": "harvest", "set": name, "objects": i + 1,
                             "candidates": sum(len(p) for p in parts)})
        cands = Candidates.concat(parts)
        torch.save(cands.to_dict(), path)
        return cands

    def _fusion_score(self, cands: Candidates) -> dict:
        return decision_gain(predict(self.net, cands), cands, PREFERRED_MARGIN)

    def _fusion_stage(self, si: int, stage: StageConfig) -> dict:
        """Harvest the rounds of ``stage.objects`` train objects and of the val objects, then train the
        quality head on them and keep the weights whose replayed fusion choices gain most on the val
        candidates (the stage's start included)."""
        drawn = [self.sampler.draw_object() for _ in range(stage.objects)]
        train = self._harvest(si, "train", [(v.image, v.labels == label, v.spacing) for v, label in drawn],
                              stage.clicks)
        val = self._harvest(si, "val", [(volume, ref, spacing) for _, volume, ref, spacing in self.val_set],
                            stage.clicks)
        by_group: dict[int, list[int]] = {}
        for i, g in enumerate(train.group):
            by_group.setdefault(int(g), []).append(i)
        groups = np.array(sorted(by_group))
        opt = make_optimizer(self.net, stage, self.added)
        best, best_state = self._keep_better_head(si, stage, 0, val, None, None, train_candidates=len(train))
        started, order, at = time.time(), self.rng.permutation(groups), 0
        last = stage.steps
        for step in range(1, stage.steps + 1):
            if stage.max_minutes and time.time() - started >= stage.max_minutes * 60:
                last = step - 1  # the cap binds the training steps; the harvest always runs to the end
                break
            if at + stage.batch > len(order):
                order, at = self.rng.permutation(groups), 0
            picked = order[at:at + stage.batch]
            at += stage.batch
            batch = train.subset(np.concatenate([by_group[int(g)] for g in picked]))
            for dim in (-1, -2):  # the head should not care which way the slice is turned
                if self.rng.random() < 0.5:
                    batch.x = batch.x.flip(dim)
            self.net.quality.train()
            for group in opt.param_groups:
                group["lr"] = stage.lr * group["scale"] * lr_factor(step / stage.steps)
            loss = head_loss(self.net, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 10 == 0:
                self._write({"event": "train", "stage": si, "kind": stage.kind, "step": step,
                             "elapsed_s": round(time.time() - started, 1), "loss": round(float(loss.detach()), 4)})
            if step % self.config.val_every == 0 or step == stage.steps:
                best, best_state = self._keep_better_head(si, stage, step, val, best, best_state)
        if last < stage.steps and last % self.config.val_every:
            best, best_state = self._keep_better_head(si, stage, last, val, best, best_state)
        self.net.quality.load_state_dict(best_state)
        self._write({"event": "best", "stage": si, "kind": stage.kind, **best})
        return {f"fusion_{k}": float(v) for k, v in best.items()}

    def _keep_better_head(self, si, stage, step, val, best, best_state, **logged):
        score = {"step": step, **self._fusion_score(val)}
        self._write({"event": "val", "stage": si, "kind": stage.kind, **logged, **score})
        if best is None or score["gain"] > best["gain"]:
            return score, copy.deepcopy(self.net.quality.state_dict())
        return best, best_state

    def _validate_keep_best(self, si, stage, step, best, best_state):
        summary = self.validate()
        self._write({"event": "val", "stage": si, "kind": stage.kind, "step": step, **summary})
        if best is None or summary["score"] >= best["score"]:
            best = {"score": summary["score"], "step": step, "summary": summary}
            best_state = copy.deepcopy(self.net.state_dict())
            if self.ranks.lead:
                torch.save(best_state, self.run_dir / "best_of_stage.pt")
        return best, best_state
