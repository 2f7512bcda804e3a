"""Benchmark the VGGT implementation.

CPU (always): forward time of the `tiny` config.
GPU (when CUDA is available): the 1B config with random weights at 518x336 in bf16 for 1, 8 and
20 frames (aggregator alone and the full model with heads: time and peak memory), printed next to
the published aggregator figures; then one LoRA training step (8 frames, batch 1) with and without
activation checkpointing.
Usage: python scripts/bench_model.py [--cpu-frames 1 8] [--repeats 3] [--skip-gpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from train.model import VGGT, LoraSpec, apply_lora, build_model

HEIGHT, WIDTH = 336, 518
# Published (one H100, FlashAttention-3, 336x518, aggregator): frames -> (seconds, GB)
PUBLISHED = {
    1: (0.04, 1.88),
    2: (0.05, 2.07),
    4: (0.07, 2.45),
    8: (0.11, 3.23),
    10: (0.14, 3.63),
    20: (0.31, 5.58),
}
LORA_SPEC = LoraSpec(
    heads=["depth", "camera"], frame_blocks="16-23", global_blocks="16-23", rank=16, alpha=32
)


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_gb(fn: Callable[[], object]) -> float:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 1e9


def cpu_section(frames_list: list[int], repeats: int, console: Console) -> None:
    model = build_model("tiny").eval()
    table = Table(title=f"tiny config, CPU forward ({torch.get_num_threads()} threads), {HEIGHT}x{WIDTH}")
    for column in ("frames", "seconds", "s / frame"):
        table.add_column(column, justify="right")
    for frames in frames_list:
        images = torch.rand(1, frames, 3, HEIGHT, WIDTH)
        with torch.inference_mode():
            seconds = timed(lambda images=images: model(images), repeats, torch.device("cpu"))
        table.add_row(str(frames), f"{seconds:.3f}", f"{seconds / frames:.3f}")
    console.print(table)


def gpu_forward_section(model: VGGT, repeats: int, console: Console) -> None:
    device = torch.device("cuda")
    keep = set(model.cfg.dpt_layers) | {model.cfg.depth - 1}
    table = Table(title="VGGT-1B (random weights), H100-class GPU, 336x518, bf16 aggregator weights")
    for column in (
        "frames",
        "aggregator s",
        "published s",
        "aggr. peak GB",
        "published GB",
        "full s",
        "full GB",
    ):
        table.add_column(column, justify="right")
    for frames in (1, 8, 20):
        images = torch.rand(1, frames, 3, HEIGHT, WIDTH, device=device)

        def aggregator(images=images) -> object:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                return model.aggregator(images, keep_layers=keep)

        def full(images=images) -> object:
            with torch.inference_mode():
                return model(images)

        pub_s, pub_gb = PUBLISHED[frames]
        table.add_row(
            str(frames),
            f"{timed(aggregator, repeats, device):.3f}",
            f"{pub_s:.2f}",
            f"{peak_gb(aggregator):.2f}",
            f"{pub_gb:.2f}",
            f"{timed(full, repeats, device):.3f}",
            f"{peak_gb(full):.2f}",
        )
    console.print(table)


def gpu_lora_section(repeats: int, console: Console) -> None:
    device = torch.device("cuda")
    table = Table(title="LoRA training step, 8 frames, batch 1, 336x518 (fp32 base weights, bf16 autocast)")
    for column in ("activation checkpointing", "seconds / step", "peak GB"):
        table.add_column(column, justify="right")
    images = torch.rand(1, 8, 3, HEIGHT, WIDTH, device=device)
    for checkpointing in (False, True):
        model = apply_lora(build_model("1b").to(device), LORA_SPEC)
        model.get_base_model().set_activation_checkpointing(checkpointing)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step(model=model, optimizer=optimizer) -> None:
            out = model(images)
            loss = out["depth"].mean() + out["pose_enc"].square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = timed(step, repeats, device)
        table.add_row("on" if checkpointing else "off", f"{seconds:.3f}", f"{peak_gb(step):.2f}")
        del model, optimizer
        torch.cuda.empty_cache()
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-frames", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-gpu", action="store_true")
    args = parser.parse_args()
    console = Console()
    cpu_section(args.cpu_frames, args.repeats, console)
    if args.skip_gpu or not torch.cuda.is_available():
        console.print("no CUDA device: GPU section skipped")
        return
    model = build_model("1b").cuda().eval()
    model.aggregator.to(torch.bfloat16)
    gpu_forward_section(model, args.repeats, console)
    del model
    torch.cuda.empty_cache()
    gpu_lora_section(args.repeats, console)


if __name__ == "__main__":
    main()
