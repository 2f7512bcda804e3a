"""Base + LoRA adapter folded into one plain state dict in the published VGGT key layout, so any
tool that loads VGGT-1B loads the fine-tuned model (here: `train.model.load_pretrained`, strict).

The model is built without the track head (as everywhere in this project), so the file has no
`track_head.*` keys; the ImageNet mean/std are non-persistent buffers and are not stored either.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from shards.atomic import write_atomic
from train.model import merge_adapter

from ..base_model import BaseModel
from ..predict import Predictor

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def merged_state_dict(adapter: Path, base: BaseModel, dtype: str = "fp32") -> dict[str, torch.Tensor]:
    """The merged weights (merging happens in float32, the cast to `dtype` comes last)."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    predictor = Predictor(base.size, base.weights, "cpu", bf16=False, seed=base.seed)
    predictor.use_adapter(adapter)
    model = merge_adapter(predictor.model)
    return {key: value.detach().to(DTYPES[dtype]).contiguous() for key, value in model.state_dict().items()}


def export_merged(
    adapter: Path, base: BaseModel, out: Path, dtype: str = "fp32", force: bool = False
) -> Path:
    """Write the merged weights to `out` (.safetensors, atomically); its metadata names the base
    and the adapter."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: the merged model is written as .safetensors")
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    state = merged_state_dict(adapter, base, dtype)
    metadata = {
        "format": "pt",
        "base": json.dumps(base._asdict()),
        "adapter": str(adapter),
        "dtype": dtype,
        "layout": "VGGT (facebook/VGGT-1B keys, no track_head)",
    }
    write_atomic(out, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    log.info("merged %d tensors (%s) -> %s", len(state), dtype, out)
    return out
