"""Raw datasets -> shards (`kitti360-prep`). From Python:

    from preprocess.driver import build
    from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
    from preprocess.sources.colmap import ColmapConfig, ColmapScene, ColmapSource

    build(Kitti360Source(root, Kitti360Config(depth=DepthSettings(accumulate=4))), out, workers=2)
    build(ColmapSource(ColmapScene("courtyard", model_dir, image_dir)), out)

- sources/: one package per dataset kind; each plans units and yields frame records
- driver.py: units, resume, progress, workers, commits and the manifest, for every source
- record.py: the frame record every source yields, and what of it is stored
- imaging.py, kernels.py: resampling and the Numba kernels the sources share
- readahead.py, worker_warmup.py, forkserver_preload.py: input decoding off the main thread,
  warm worker start-up
- lifetime.py: one build per output root (file lock), workers that die with the build
- manifest.py: config hashes, input fingerprints, OUT/manifest.json
- data_summary.py, summary_plots.py: `kitti360-prep stats`; verify.py: `kitti360-prep verify`
- synthetic/: the synthetic KITTI-360 scene with exact ground truth (`kitti360-prep synth`)
- kernel_cache.py: where Numba caches the kernels (a folder per version of these sources)
"""

from .kernel_cache import use_source_keyed_cache

use_source_keyed_cache()  # before any module here defines a kernel
