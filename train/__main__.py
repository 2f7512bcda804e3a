"""`python -m train run ...` (what torchrun launches)."""

from .cli import app

app()
