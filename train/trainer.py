"""The LoRA fine-tuning loop: streamed windows -> VGGT -> losses -> AdamW on adapters only,
with gradient accumulation, per-group clipping, atomic epoch checkpoints and exact resume."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from shards.atomic import fresh_staging_dir, publish_dir

from . import run_dir as layout
from .config import ConfigError, TrainConfig
from .data import WindowDataset, step_sampler, validation_windows
from .distributed import DistInfo, barrier, broadcast_flag
from .losses import batch_loss
from .model import load_adapter_weights, save_adapter
from .modeling import build_lora_model, clip_groups, gt_pose_encoding
from .resume import load_newest, rng_state, save_state, set_rng_state, truncate_metrics
from .schedule import lr_factor
from .validation import BestTracker, Validator

log = logging.getLogger(__name__)


def _mean_over_ranks(terms: list[dict[str, float]], device: torch.device) -> dict[str, float]:
    """Mean of the loss terms logged since the last log line and, under DDP, over all ranks,
    so the log shows the loss of the global batch. The reduction runs on the training device:
    NCCL reduces CUDA tensors only."""
    keys = sorted({k for t in terms for k in t})
    values = torch.tensor(
        [float(np.mean([t[k] for t in terms if k in t])) for k in keys], dtype=torch.float64, device=device
    )
    if dist.is_initialized():
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return dict(zip(keys, values.tolist(), strict=True))


def _sum_over_ranks(counts: dict[str, int], device: torch.device) -> dict[str, int]:
    """Counts summed over all ranks under DDP: each rank loads its own share of every batch."""
    if not dist.is_initialized():
        return dict(counts)
    values = torch.tensor(list(counts.values()), dtype=torch.int64, device=device)
    dist.all_reduce(values)
    return dict(zip(counts, values.tolist(), strict=True))


def start_fresh(run_dir: Path, overwrite: bool) -> None:
    """A run started without --resume: its logs start empty, and checkpoints of an earlier run
    in the same folder are only discarded when asked (else a later --resume could mix them)."""
    found = layout.list_checkpoints(run_dir)
    if found and not overwrite:
        raise ConfigError(
            f"{run_dir} already holds checkpoints ({found[0].name} .. {found[-1].name}): pass --resume "
            "to continue that run, --overwrite to discard it, or choose another --out"
        )
    for path in (run_dir / layout.CHECKPOINTS_DIR, run_dir / layout.TENSORBOARD_DIR):
        shutil.rmtree(path, ignore_errors=True)
    (run_dir / layout.METRICS_FILE).unlink(missing_ok=True)


class TrainingDiverged(RuntimeError):
    """Too many optimizer steps in a row had non-finite gradients."""


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        dist_info: DistInfo,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.cfg, self.run_dir, self.dist = cfg, Path(run_dir), dist_info
        if not resume and dist_info.is_main:
            start_fresh(self.run_dir, overwrite)
        barrier()
        self.device = dist_info.device
        self.micro_steps = cfg.run.steps * cfg.optim.grad_accum
        torch.manual_seed(cfg.run.seed)
        self.model = build_lora_model(cfg, self.device, verbose=dist_info.is_main)
        self.groups = clip_groups(self.model)
        self.optimizer = torch.optim.AdamW(
            [{"params": p, "name": n} for n, p in self.groups.items() if p],
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, cfg.run.steps, cfg.optim.warmup, cfg.optim.min_lr_ratio),
        )
        # fp16: dynamic loss scale; for bf16 / fp32 a disabled scaler whose calls pass through
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.optim.precision == "fp16")
        self.heads = tuple(h for h, w in cfg.loss.head_weights().items() if w > 0)  # others are not run
        self.step = 0
        self.skipped = 0
        self.nonfinite_steps = 0  # optimizer steps skipped for non-finite gradients
        self.bad_in_row = 0
        self.tracker = BestTracker(cfg.run.best_metric, cfg.run.early_stop_patience)
        self.stopped_early = False
        self.history: list[dict] = []
        if resume:
            self._resume()
        self.validator = self._validator() if cfg.run.val_every and dist_info.is_main else None
        self.net = (
            DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if dist_info.world_size > 1
            else self.model
        )
        dataset = WindowDataset(
            cfg.data.shards,
            cfg.data,
            cfg.run.seed,
            self.micro_steps * cfg.data.batch_size * dist_info.world_size,
            cfg.augment,
        )
        self.data_report = dataset.report
        if dist_info.is_main:
            for line in dataset.report.lines():
                log.info(line)
        sampler = step_sampler(
            dataset,
            self.micro_steps,
            cfg.data.batch_size,
            dist_info.rank,
            dist_info.world_size,
            self.step * cfg.optim.grad_accum,
        )
        workers = cfg.data.num_workers
        self.loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=cfg.data.prefetch_factor if workers > 0 else None,
            persistent_workers=False,
            # its own generator: creating the loader iterator must not draw from the global RNG
            # that LoRA dropout uses, or a resumed run would drift from the uninterrupted one
            generator=torch.Generator().manual_seed(cfg.run.seed),
        )

    # ---- state ---------------------------------------------------------------------------

    def _resume(self) -> None:
        found = load_newest(self.run_dir, self._restore)
        if found is None:
            log.info("no complete checkpoint in %s; starting from scratch", self.run_dir)
        else:
            checkpoint, state = found
            self.step, self.skipped = state["step"], state["skipped"]
            self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
            self.stopped_early = bool(state.get("stopped_early", False))
            if "validation" in state:
                self.tracker.restore(state["validation"])
            set_rng_state(state["rng"])
            log.info("resumed from %s at step %d", checkpoint, self.step)
        if self.dist.is_main:
            truncate_metrics(self.run_dir / layout.METRICS_FILE, self.step)
            if self.tracker.best_checkpoint_step is not None:  # the record may name a newer, unloadable one
                self._write_best()

    def _validator(self) -> Validator:
        run = self.cfg.run
        try:
            windows = validation_windows(
                self.cfg.data.shards, self.cfg.data, run.val_split, run.val_windows, self.cfg.augment
            )
        except ConfigError as exc:
            raise ConfigError(f"run.val_split: {exc}") from None
        return Validator(windows, self.cfg.loss, self.heads, self.device)

    def _checkpoint_dir(self, step: int) -> Path:
        """Checkpoint of `step`: epoch_N for the epoch it ends or, mid-epoch (the last step,
        an early stop), the epoch it falls in."""
        return layout.epoch_dir(self.run_dir, -(-step // self.cfg.run.steps_per_epoch))

    def _write_best(self) -> None:
        best = self.tracker
        layout.write_best(self.run_dir, {
            "checkpoint": self._checkpoint_dir(best.best_checkpoint_step).name,
            "step": best.best_checkpoint_step, "metric": best.metric, "value": best.best_checkpoint_value,
        })  # fmt: skip

    def _restore(self, checkpoint: Path, state: dict) -> None:
        """Load one checkpoint's adapter and optimizer state (raises when they do not fit)."""
        load_adapter_weights(self.model, checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    def _save(self) -> Path:
        final = self._checkpoint_dir(self.step)
        epoch = layout.epoch_of(final)
        if self.dist.is_main:
            tmp = fresh_staging_dir(final)
            save_adapter(self.model, tmp)
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "epoch": epoch,
                "skipped": self.skipped,
                "nonfinite_steps": self.nonfinite_steps,
                "scaler": self.scaler.state_dict(),
                "validation": self.tracker.state(),
                "stopped_early": self.stopped_early,
                "rng": rng_state(),
                "sampler_position": self.step * self.cfg.optim.grad_accum,
            }
            save_state(tmp / layout.STATE_FILE, state)
            layout.write_config(tmp / layout.CONFIG_FILE, self.cfg.to_dict())
            publish_dir(tmp, final)
            if self.tracker.best_checkpoint_step == self.step:
                self._write_best()
        barrier()
        return final

    # ---- loop ----------------------------------------------------------------------------

    def _clip(self) -> dict[str, float]:
        limits = {"heads": self.cfg.optim.clip_heads, "aggregator": self.cfg.optim.clip_aggregator}
        return {
            f"grad_norm/{name}": float(torch.nn.utils.clip_grad_norm_(params, limits[name]))
            for name, params in self.groups.items()
            if params
        }

    def _micro_step(self, batch: dict, progress: float) -> dict[str, float] | None:
        batch = {
            k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
        }
        outputs = self.net(batch["images"], heads=self.heads)  # aggregator autocast: optim.precision
        gt_pose = gt_pose_encoding(batch["cam_from_world"], batch["intrinsics"], batch["images"].shape[-2:])
        loss, terms = batch_loss(outputs, batch, gt_pose, self.cfg.loss, progress)
        if loss is None:
            # keep DDP ranks in step: a zero loss that touches every output
            loss = sum(v.sum() for k, v in outputs.items() if torch.is_tensor(v) and v.requires_grad) * 0.0
            self.scaler.scale(loss / self.cfg.optim.grad_accum).backward()
            return None
        self.scaler.scale(loss / self.cfg.optim.grad_accum).backward()
        return {"loss": float(loss.detach()), **terms}

    def _apply_gradients(self) -> tuple[dict[str, float], float]:
        """Unscale (fp16), clip per group, step on finite gradients, advance the schedule;
        returns the gradient norms and the lr used."""
        self.scaler.unscale_(self.optimizer)
        norms = self._clip()
        lr = self.optimizer.param_groups[0]["lr"]
        self._optimizer_step(all(math.isfinite(v) for v in norms.values()))
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norms, lr

    def _optimizer_step(self, finite: bool) -> None:
        """Step on finite gradients only; a skipped step is counted, and `optim.max_bad_steps`
        of them in a row stop the run (the last checkpoint holds finite adapters)."""
        if finite:
            self.scaler.step(self.optimizer)
            self.bad_in_row = 0
        else:
            self.nonfinite_steps += 1
            self.bad_in_row += 1
            log.warning("step %d: non-finite gradients, optimizer step skipped", self.step + 1)
        self.scaler.update()
        if self.bad_in_row >= self.cfg.optim.max_bad_steps:
            raise TrainingDiverged(
                f"{self.bad_in_row} optimizer steps in a row (up to step {self.step + 1}) had non-finite "
                f"gradients (optim.max_bad_steps={self.cfg.optim.max_bad_steps}); stopped. Check the "
                f"data for NaN/inf, lower optim.lr or use optim.precision=bf16/fp32; "
                f"checkpoints in {self.run_dir / layout.CHECKPOINTS_DIR} hold finite adapters"
            )

    def run(self) -> list[dict]:
        cfg, accum = self.cfg, self.cfg.optim.grad_accum
        main = self.dist.is_main
        writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            # events past the checkpoint a resumed run continues from are dropped, as in metrics.jsonl
            purge = self.step + 1 if self.step else None
            writer = SummaryWriter(str(self.run_dir / layout.TENSORBOARD_DIR), purge_step=purge)
        bar = tqdm(total=cfg.run.steps, initial=self.step, desc="train", unit="step", disable=not main)
        self.model.train()
        since_log: list[dict[str, float]] = []  # loss terms of the micro-steps since the last log line
        frames = 0
        wait = compute = 0.0
        data_counts = {"redrawn_windows": 0, "nonfinite_depth": 0}  # this rank's, since this process started
        if main and self.step == 0:  # the header row: what the data rules kept and left out
            # (at step 0 the log holds nothing to keep: at most the header of a killed attempt)
            with open(self.run_dir / layout.METRICS_FILE, "w") as fh:
                fh.write(json.dumps({"step": 0, "data": self.data_report.to_dict()}) + "\n")
        tick = time.perf_counter()
        loader = iter(self.loader)
        while self.step < cfg.run.steps and not self.stopped_early:
            for _ in range(accum):
                t0 = time.perf_counter()
                batch = next(loader)
                t1 = time.perf_counter()
                terms = self._micro_step(batch, self.step / cfg.run.steps)
                wait += t1 - t0
                compute += time.perf_counter() - t1
                frames += batch["images"].shape[0] * batch["images"].shape[1]
                for key in data_counts:
                    data_counts[key] += int(batch[key].sum())
                if terms is None:
                    self.skipped += 1
                else:
                    since_log.append(terms)
            norms, lr = self._apply_gradients()
            self.step += 1
            bar.update(1)
            logging_step = self.step % cfg.run.log_every == 0 or self.step == cfg.run.steps
            terms_mean = _mean_over_ranks(since_log, self.device) if logging_step else {}
            counts = _sum_over_ranks(data_counts, self.device) if logging_step else {}
            if main and logging_step:
                elapsed = time.perf_counter() - tick
                record = {
                    "step": self.step,
                    **terms_mean,
                    "lr": lr,
                    **norms,
                    "frames_per_s": frames * self.dist.world_size / max(elapsed, 1e-9),
                    "data_wait_share": wait / max(wait + compute, 1e-9),
                    "skipped_batches": self.skipped,
                    "nonfinite_steps": self.nonfinite_steps,
                    **counts,
                }
                if self.device.type == "cuda":
                    record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
                self._log(record, writer)
                bar.set_postfix(loss=record.get("loss", float("nan")))
            if logging_step:
                since_log, frames, wait, compute, tick = [], 0, 0.0, 0.0, time.perf_counter()
            if cfg.run.val_every and (self.step % cfg.run.val_every == 0 or self.step == cfg.run.steps):
                self.stopped_early = self._validate(writer)
            if self.validator is not None and cfg.run.image_every and self.step % cfg.run.image_every == 0:
                pred, gt = self.validator.pictures(self.model)
                writer.add_images("val/depth_pred", pred, self.step)
                writer.add_images("val/depth_gt", gt, self.step)
            if self._checkpoint_step() or self.stopped_early:
                path = self._save()
                if main:
                    log.info("checkpoint %s", path)
        if self.stopped_early and main:
            best = self.tracker.best_checkpoint_step
            log.info(
                "stopped early at step %d: no lower %s in %d validations; best: %s",
                self.step, self.tracker.metric, self.tracker.since_best,
                "none (no finite score)" if best is None else self._checkpoint_dir(best).name,
            )  # fmt: skip
        bar.close()
        if writer is not None:
            writer.close()
        return self.history

    def _validate(self, writer) -> bool:
        """Validate on the main rank, log it, and tell every rank whether to stop early."""
        stop = False
        if self.validator is not None:
            values = self.validator.run(self.model)
            value = values[self.tracker.metric]
            self.tracker.update(value)
            stop = self.tracker.exhausted
            if self._checkpoint_step() or stop:  # a checkpoint of this step follows
                self.tracker.checkpointed(value, self.step)
            best = {"val/best": self.tracker.best, "val/since_best": self.tracker.since_best}
            self._log({"step": self.step, **values, **best}, writer)
        return broadcast_flag(stop)

    def _checkpoint_step(self) -> bool:
        return self.step % self.cfg.run.steps_per_epoch == 0 or self.step == self.cfg.run.steps

    def _log(self, record: dict, writer) -> None:
        self.history.append(record)
        with open(self.run_dir / layout.METRICS_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float):
                writer.add_scalar(key, value, record["step"])
