"""Adaptation methods with one interface: the finite NTK and the paper's baselines.

>>> from ntkcore.experiments import methods
>>> methods.available()[:4]
['ntk', 'ntk-linearized', 'no-retrain', 'last-layer']
>>> source = methods.load_source("sinusoids")             # doctest: +SKIP
>>> ntk = methods.create("ntk", source)                   # source-side work, once
>>> mean, var = ntk.clone().fit(x, y).predict(x_test)     # doctest: +SKIP

In an app or a notebook that adapts to many contexts, let the process-wide cache keep the
source network and each method's source-side fit (it returns a fresh unfitted clone each
call, safe to fit)::

    source = methods.cached_source("sinusoids")           # zoo cache, loaded once
    ablr = methods.prepared("ablr", source)               # feature learning once
    mean, var = ablr.fit(x, y).predict(x_grid)            # milliseconds

Your own data (a regression ``Task`` with a source split, e.g. ``data.from_csv``): train a
zoo architecture on its source rows with ``methods.train_source(task, "mlp", name=...)``.

``predict`` always returns the Gaussian predictive of **y** (noise included), mean and
variance each of shape (m, o). Regression only. See :class:`Method` for the life cycle
(``prepare`` / ``fit`` / ``predict`` / ``clone``) and how to add a method.

=================  ==========  ====================================================
name               kind        what
=================  ==========  ====================================================
``ntk``            bayesian    finite NTK, ``adapt(mean="zero")`` (Algorithm 1)
``ntk-linearized`` bayesian    linearized network, ``adapt(mean="network")``
``no-retrain``     point       the source network as is
``last-layer``     point       retrain ``head`` for the source budget
``last-layer-6x``  point       retrain ``head`` for 6× the source budget
``fine-tune``      point       retrain all layers for the source budget
``rbf-gp``         bayesian    RBF GP, hyperparameters fit on the source
``ablr``           bayesian    Bayesian linear regression on learned last-layer features
                               (feature learning starts from the source network)
``ablr-scratch``   bayesian    the same, features learned from a random initialization
=================  ==========  ====================================================
"""

from ntkcore.experiments.methods.ablr import ABLR, ABLRScratch, BayesianLinearRegression
from ntkcore.experiments.methods.base import (
    METHODS,
    VARIANCE_FLOOR,
    Method,
    available,
    create,
    get,
    register,
    residual_variance,
)
from ntkcore.experiments.methods.cache import clear as clear_cache
from ntkcore.experiments.methods.cache import prepared
from ntkcore.experiments.methods.cache import source as cached_source
from ntkcore.experiments.methods.heads import HeadFeatures, HeadReadout, find_head
from ntkcore.experiments.methods.ntk import NTK, NTKLinearized
from ntkcore.experiments.methods.rbf_gp import RBFGP
from ntkcore.experiments.methods.retrain import FineTune, LastLayer, LastLayer6x, NoRetrain
from ntkcore.experiments.methods.source import (
    DEFAULT_PRESETS,
    HEAD,
    Source,
    load_source,
    train_source,
)

__all__ = [
    "ABLR",
    "ABLRScratch",
    "DEFAULT_PRESETS",
    "HEAD",
    "METHODS",
    "NTK",
    "RBFGP",
    "VARIANCE_FLOOR",
    "BayesianLinearRegression",
    "FineTune",
    "HeadFeatures",
    "HeadReadout",
    "LastLayer",
    "LastLayer6x",
    "Method",
    "NTKLinearized",
    "NoRetrain",
    "Source",
    "available",
    "cached_source",
    "clear_cache",
    "create",
    "find_head",
    "get",
    "load_source",
    "prepared",
    "register",
    "residual_variance",
    "train_source",
]
