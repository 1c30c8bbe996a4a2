"""Folding BatchNorm into the convolution before it, anywhere in a model (``DetectionModel.fuse``)."""
from __future__ import annotations

import torch
import torch.fx
from torch import nn


def fuse_conv_bn(module: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d into it, wherever it is: the pairs are found
    on the module's traced graph (torch.fx), so only a BN fed by a conv and nothing else is folded; a module
    that cannot be traced is searched child by child. Returns the number of pairs folded."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in module.modules()):
        return 0
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # data-dependent control flow, list inputs ...: look inside instead
        return sum(fuse_conv_bn(c) for c in module.children())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(module.get_submodule(node.target), nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if not (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                and calls[prev.target] == 1 and calls[node.target] == 1
                and isinstance(module.get_submodule(prev.target), nn.Conv2d)):
            continue
        conv, bn = module.get_submodule(prev.target), module.get_submodule(node.target)
        if bn.running_mean is None:
            continue
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv.eval(), bn.eval())
        _set_submodule(module, prev.target, fused)
        _set_submodule(module, node.target, nn.Identity())
        folded += 1
    return folded


def _set_submodule(root: nn.Module, target: str, new: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)
