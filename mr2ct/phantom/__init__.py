"""The procedural spine phantom: paired MR/CT subjects with exact ground truth."""

from mr2ct.phantom.generate import PhantomSubject, generate_dataset, generate_subject

# Bump when generated data change for the same config, so caches keyed by the config are not reused.
PHANTOM_VERSION = 3  # 3: mr_seg_iso / mr_subreg_iso

__all__ = ["PHANTOM_VERSION", "PhantomSubject", "generate_dataset", "generate_subject"]
