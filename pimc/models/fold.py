"""Fold eval-mode BatchNorm into the convolution before it, for the exported task models.

In eval mode a BatchNorm is a fixed per-channel affine map of its running statistics, so
``bn(conv(x))`` is one convolution with rescaled weights and a bias. Folding removes one op and
one pass over the activations per conv from the exported graph (BN was 7.5-12 % of inference,
issue 15). It is done on a copy at export time only: training checkpoints keep the unfolded,
torchvision-compatible state dicts.

Conv -> BN pairs are read from the module structure rather than traced, because only there is
"the BN reads exactly this conv's output" known for sure:

* children ``i``, ``i + 1`` of a plain :class:`torch.nn.Sequential` (its forward chains them):
  ``SmallCNN.features``, ``CNN1d.features``, the ResNets' ``downsample``;
* the attribute pairs of :data:`PAIRS`, classes whose ``forward`` computes ``bnK(convK(x))``
  (the ResNet stem and blocks).

Anything else (e.g. the task head's ``BatchNorm1d`` that *precedes* its ``Linear``) is left
as it is.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pimc.models.backbones import BasicBlock, Bottleneck, ResNet

__all__ = ["PAIRS", "fold_batchnorm"]

#: Attribute pairs ``(conv, bn)`` whose forward is ``bn(conv(x))``; checked against the
#: forwards in :mod:`pimc.models.backbones` (``downsample`` is a Sequential, found as one).
PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    ResNet: (("conv1", "bn1"),),
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}

# A conv's output has the layout its own BN kind normalises: (B, C, L) for BatchNorm1d, ...
_BN_OF = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """Whether ``bn`` normalises ``conv``'s output with fixed (running) statistics."""
    kind = _BN_OF.get(type(conv))
    return (
        kind is not None
        and type(bn) is kind
        # Without running stats an eval BN still normalises with batch stats: not foldable.
        and bn.running_mean is not None
        and bn.running_var is not None
        and conv.out_channels == bn.num_features
    )


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    """Names of the direct children of ``module`` that form conv -> BN pairs."""
    if type(module).forward is nn.Sequential.forward:  # a subclass may reorder its children
        names = list(module._modules)
        return [
            (a, b)
            for a, b in zip(names, names[1:], strict=False)
            if _foldable(module._modules[a], module._modules[b])
        ]
    for cls, pairs in PAIRS.items():
        if isinstance(module, cls):
            return [
                (a, b)
                for a, b in pairs
                if _foldable(getattr(module, a, None), getattr(module, b, None))
            ]
    return []


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every conv -> BatchNorm pair folded into one conv.

    Each folded conv gets the weights and bias of ``bn(conv(x))`` (torch's
    :func:`~torch.nn.utils.fusion.fuse_conv_bn_eval`, with the BN's running statistics) and its
    BN becomes :class:`torch.nn.Identity`, so the module tree, names and forwards are otherwise
    unchanged and the copy exports as the original does. For inference only: the copy's outputs
    equal ``model.eval()``'s, not those of training mode.

    Args:
        model: Any module; it is not modified (nor switched to eval mode).

    Returns:
        The folded copy, in eval mode.
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        for conv_name, bn_name in _pairs(module):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            # setattr goes through nn.Module's registry, so Sequential children ("0", "1") and
            # attributes are replaced alike, keeping their names.
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
    return folded
