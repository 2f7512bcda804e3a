"""`vggt-export`: a fine-tuned model for other tools (base + adapter merged into plain VGGT
weights), and the seed fork's checkpoints converted into this project's adapters."""
