"""`vggt-infer`: a base model or fine-tuned adapter applied to a folder of images (or shard
sequences), giving depth, confidence, COLMAP cameras and a fused point cloud."""
