"""Experiment tracking frontends: MLflow (embedded by default), Weights & Biases, Notion, and your own.

A frontend is a plugin implementing the experiment events of :mod:`mipcandy.hookspecs`, installed through the
``mipcandy.frontends`` entry-point group and selected per run by name (``candy train --track mlflow,wandb``,
:func:`open_frontends`). Events reach each selected frontend on its own worker thread, so tracking never slows
training and a failing tracker never stops it. Names resolve lazily: importing this package imports no tracker.
"""
from __future__ import annotations

from mipcandy._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "Frontend": "mipcandy.frontend.protocol",
    "FrontendError": "mipcandy.frontend.protocol",
    "FrontendSet": "mipcandy.frontend.dispatch",
    "FrontendWarning": "mipcandy.frontend.dispatch",
    "ChannelStats": "mipcandy.frontend.dispatch",
    "open_frontends": "mipcandy.frontend.dispatch",
    "register_frontend": "mipcandy.frontend.dispatch",
    "create_hybrid_frontend": "mipcandy.frontend.hybrid",
    "HybridFrontend": "mipcandy.frontend.hybrid",
    "MLflowFrontend": "mipcandy.frontend.mlflow_frontend",
    "WandBFrontend": "mipcandy.frontend.wandb_frontend",
    "NotionFrontend": "mipcandy.frontend.notion_frontend",
    "SecretError": "mipcandy.frontend.secrets",
    "read_secret": "mipcandy.frontend.secrets",
    "secrets_file": "mipcandy.frontend.secrets",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
