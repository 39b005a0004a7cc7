"""The one network builder of an experiment, used by the trainer and by the predictor alike.

As nnU-Net's ``build_network_architecture`` is "called in inference as well", the predictor rebuilds the trained
network from the recorded :class:`~mipcandy.training.options.TrainingOptions` (bundle, bundle options, classes) and
``example_shape`` through :func:`build_experiment_network`, the function the trainer used: the checkpoint's
layers line up by construction. Deep supervision is switched through one declared interface,
:class:`~mipcandy.hookspecs.DeepSupervisedNetwork`.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mipcandy.hookspecs import DeepSupervisedNetwork
from mipcandy.layer import unwrap_compiled
from mipcandy.plugins import build_network
from mipcandy.training.options import TrainingOptions


def build_experiment_network(options: TrainingOptions, example_shape: Sequence[int]) -> nn.Module:
    """The network ``options.bundle`` builds for inputs ``example_shape``, with deep supervision off.

    :raises NotImplementedError: without a bundle (implement ``build_network`` instead).
    :raises TypeError: when ``options.deep_supervision`` asks for heads the network does not have.
    """
    if options.bundle is None:
        raise NotImplementedError("no network: implement build_network(example_shape) or select a bundle "
                                  "(bundle='unet')")
    if options.num_classes is None:
        raise ValueError("build_experiment_network needs options.num_classes")
    network = build_network(options.bundle, example_shape, options.num_classes, options.bundle_options)
    if options.deep_supervision and not isinstance(network, DeepSupervisedNetwork):
        raise TypeError(f"bundle {options.bundle!r} built a {type(network).__name__}, which has no deep-supervision "
                        "heads (it does not implement set_deep_supervision); train without deep_supervision")
    return network


def set_deep_supervision(model: nn.Module, enabled: bool) -> None:
    """Switch the deep-supervision heads of ``model`` (compiled or not) on or off.

    :raises TypeError: when the network does not implement :class:`~mipcandy.hookspecs.DeepSupervisedNetwork`.
    """
    network = unwrap_compiled(model)
    if not isinstance(network, DeepSupervisedNetwork):
        raise TypeError(f"{type(network).__name__} has no deep-supervision heads: implement "
                        "set_deep_supervision(enabled) (mipcandy.DeepSupervisedNetwork), or train without "
                        "deep_supervision")
    network.set_deep_supervision(enabled)
