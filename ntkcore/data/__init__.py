"""Offline transfer tasks for the experiments of Maddox et al. (2021).

>>> from ntkcore import data
>>> data.available()                        # doctest: +SKIP
['sinusoids', 'linear-to-sine', 'toy-gap', 'spatial', 'faces-rotation', 'mnist', ...]
>>> task = data.load("sinusoids", seed=3)   # target task 3; the source task is source_seed=0
>>> x, y = task.source                      # train the network here
>>> xc, yc = task.context(10)               # condition the finite-NTK GP on 10 target points
>>> x_test, y_test = task.test              # score on held-out target data

Every task is generated on the fly or read from small files shipped in the repository's
``datasets/`` folder (override with ``$NTKCORE_DATASETS``), verified against SHA-256 checksums;
nothing is downloaded.  ``seed`` drives the target side and ``source_seed`` the source side, so
one pretrained model serves all target seeds.  Provenance and licences: ``datasets/SOURCES.md``.
"""

from ntkcore.data import images, spatial, synthetic  # noqa: F401  (register the loaders)
from ntkcore.data._files import DatasetIntegrityError, clear_cache, datasets_dir
from ntkcore.data.csv import CsvColumns, from_csv, read_csv_columns
from ntkcore.data.images import inscribed_crop, rotate_and_crop
from ntkcore.data.registry import available, info, load
from ntkcore.data.spatial import MapGrid, map_grid
from ntkcore.data.task import MissingSourceError, Task, TaskMeta

__all__ = [
    "CsvColumns",
    "DatasetIntegrityError",
    "MapGrid",
    "MissingSourceError",
    "Task",
    "TaskMeta",
    "available",
    "clear_cache",
    "datasets_dir",
    "from_csv",
    "info",
    "inscribed_crop",
    "load",
    "map_grid",
    "read_csv_columns",
    "rotate_and_crop",
]
