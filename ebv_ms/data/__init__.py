"""Data: the 100k-class zip read in place, dataset folders and lists, the paper's recipes,
sharding. Entry point: ``create_dataset`` (docs/data.md)."""
from .dataset import DatasetInfo, SplitSource, create_dataset, open_split, split_names
from .layouts import Layout, LayoutError, detect_layout
from .presets import create_batch_transform, create_transforms, mixup_cutmix
from .sampler import ShardSampler, shard_indices
from .source import DataError, ImageSource
from .zip_index import ArchiveError, ZipIndex, load_zip_index
