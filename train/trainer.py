"""The LoRA fine-tuning loop: streamed windows -> VGGT -> losses -> AdamW on adapters only,
with gradient accumulation, per-group clipping, atomic epoch checkpoints and exact resume."""

from __future__ import annotations

import json
import logging
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
from .config import TrainConfig
from .data import WindowDataset, step_sampler
from .distributed import DistInfo, barrier
from .losses import batch_loss
from .model import load_adapter_weights, save_adapter
from .modeling import build_lora_model, clip_groups, gt_pose_encoding
from .schedule import lr_factor

log = logging.getLogger(__name__)


def _rng_state() -> dict:
    """Only torch draws random numbers in the loop (LoRA dropout); data randomness is a pure
    function of (seed, sample id) and needs no state."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from; they will be re-logged."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def _mean_over_ranks(terms: list[dict[str, float]]) -> dict[str, float]:
    """Mean of the loss terms logged since the last log line and, under DDP, over all ranks,
    so the log shows the loss of the global batch."""
    keys = sorted({k for t in terms for k in t})
    values = torch.tensor(
        [float(np.mean([t[k] for t in terms if k in t])) for k in keys], dtype=torch.float64
    )
    if dist.is_initialized():
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return dict(zip(keys, values.tolist(), strict=True))


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path, dist_info: DistInfo, resume: bool = False) -> None:
        self.cfg, self.run_dir, self.dist = cfg, Path(run_dir), dist_info
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
        self.step = 0
        self.skipped = 0
        self.history: list[dict] = []
        if resume:
            self._resume()
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
        layout.discard_partial(self.run_dir)
        found = layout.list_checkpoints(self.run_dir)
        if not found:
            log.info("no complete checkpoint in %s; starting from scratch", self.run_dir)
            return
        last = found[-1]
        load_adapter_weights(self.model, last)
        state = torch.load(last / layout.STATE_FILE, map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.skipped = state["step"], state["skipped"]
        _set_rng_state(state["rng"])
        if self.dist.is_main:
            _truncate_metrics(self.run_dir / layout.METRICS_FILE, self.step)
        log.info("resumed from %s at step %d", last, self.step)

    def _save(self) -> Path:
        epoch = self.step // self.cfg.run.steps_per_epoch
        final = layout.epoch_dir(self.run_dir, epoch)
        if self.dist.is_main:
            tmp = fresh_staging_dir(final)
            save_adapter(self.model, tmp)
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "step": self.step,
                    "epoch": epoch,
                    "skipped": self.skipped,
                    "rng": _rng_state(),
                    "sampler_position": self.step * self.cfg.optim.grad_accum,
                },
                tmp / layout.STATE_FILE,
            )
            layout.write_config(tmp / layout.CONFIG_FILE, self.cfg.to_dict())
            publish_dir(tmp, final)
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
        outputs = self.net(batch["images"])  # the model applies bf16 autocast to its aggregator
        gt_pose = gt_pose_encoding(batch["cam_from_world"], batch["intrinsics"], batch["images"].shape[-2:])
        loss, terms = batch_loss(outputs, batch, gt_pose, self.cfg.loss, progress)
        if loss is None:
            # keep DDP ranks in step: a zero loss that touches every output
            loss = sum(v.sum() for k, v in outputs.items() if torch.is_tensor(v) and v.requires_grad) * 0.0
            (loss / self.cfg.optim.grad_accum).backward()
            return None
        (loss / self.cfg.optim.grad_accum).backward()
        return {"loss": float(loss.detach()), **terms}

    def run(self) -> list[dict]:
        cfg, accum = self.cfg, self.cfg.optim.grad_accum
        main = self.dist.is_main
        writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / layout.TENSORBOARD_DIR))
        bar = tqdm(total=cfg.run.steps, initial=self.step, desc="train", unit="step", disable=not main)
        self.model.train()
        since_log: list[dict[str, float]] = []  # loss terms of the micro-steps since the last log line
        frames = 0
        wait = compute = 0.0
        data_counts = {"redrawn_windows": 0, "nonfinite_depth": 0}  # since the start of this process
        if main and self.step == 0:  # the header row: what the data rules kept and left out
            with open(self.run_dir / layout.METRICS_FILE, "a") as fh:
                fh.write(json.dumps({"step": 0, "data": self.data_report.to_dict()}) + "\n")
        tick = time.perf_counter()
        loader = iter(self.loader)
        while self.step < cfg.run.steps:
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
            norms = self._clip()
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            bar.update(1)
            logging_step = self.step % cfg.run.log_every == 0 or self.step == cfg.run.steps
            terms_mean = _mean_over_ranks(since_log) if logging_step else {}
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
                    **data_counts,
                }
                if self.device.type == "cuda":
                    record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
                self._log(record, writer)
                bar.set_postfix(loss=record.get("loss", float("nan")))
            if logging_step:
                since_log, frames, wait, compute, tick = [], 0, 0.0, 0.0, time.perf_counter()
            if self.step % cfg.run.steps_per_epoch == 0 or self.step == cfg.run.steps:
                path = self._save()
                if main:
                    log.info("checkpoint %s", path)
        bar.close()
        if writer is not None:
            writer.close()
        return self.history

    def _log(self, record: dict, writer) -> None:
        self.history.append(record)
        with open(self.run_dir / layout.METRICS_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float):
                writer.add_scalar(key, value, record["step"])
