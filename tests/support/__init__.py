"""Test-only references shared by the tests and the benchmark scripts (which put the repo
root on sys.path to import them): they cross-check the package, so they do not ship in it.

- reference_depth.py: plain-NumPy reference of the KITTI-360 depth pipeline
- synthetic_colmap.py: a COLMAP model of the synthetic scene with exact geometry
- accuracy.py: projected depth against the synthetic scene's exact depth
"""
