"""LayerT (deferred module configuration), device helpers and the network / padding bases."""
from __future__ import annotations

import inspect
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Self, Union

import torch
from torch import nn

from mipcandy.atomic import atomic_path


class Placeholder(str):
    """An explicit deferred argument: always resolved from ``assemble()`` keywords, never a literal.

    Plain strings work too (``num_features="in_ch"``, as in the paper); use ``Placeholder`` where the
    constructor parameter could also take a literal string.
    """

    def __repr__(self) -> str:
        return f"Placeholder({str(self)!r})"


def _accepts_str(annotation: Any, globalns: dict[str, Any]) -> bool | None:
    """Whether a parameter annotation admits ``str``; ``None`` when unknown."""
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, globalns)  # noqa: S307 - resolving the module's own annotation
        except Exception:
            return "str" in annotation
    if annotation is str or annotation is Any:
        return True
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return any(_accepts_str(arg, globalns) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is typing.Literal:
        return any(isinstance(arg, str) for arg in typing.get_args(annotation))
    return False


class LayerT:
    """A module type and its keyword arguments, instantiated on demand by :meth:`assemble`.

    Stored string values that name an ``assemble`` keyword are placeholders: ``LayerT(nn.BatchNorm2d,
    num_features="in_ch").assemble(in_ch=64)`` builds ``BatchNorm2d(num_features=64)``. One descriptor thus
    adapts to every channel count, and a network swaps its conv, norm or activation by taking a different
    descriptor instead of a subclass.

    Mistakes fail loudly instead of reaching the constructor: a placeholder left unresolved (a string bound
    to a parameter that cannot take a string, or a :class:`Placeholder`) and an ``assemble`` keyword that
    matches neither a placeholder nor a constructor parameter both raise ``TypeError``.
    """

    def __init__(self, m: type[nn.Module] | Callable[..., nn.Module], **kwargs: Any) -> None:
        self.m = m
        self.kwargs: dict[str, Any] = kwargs

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"LayerT({getattr(self.m, '__name__', self.m)}{', ' if args else ''}{args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerT) and self.m is other.m and self.kwargs == other.kwargs

    __hash__ = None  # type: ignore[assignment]  # mutable kwargs

    def _signature(self) -> inspect.Signature | None:
        try:
            return inspect.signature(self.m)
        except (TypeError, ValueError):
            return None

    def _is_unresolved(self, key: str, value: Any, signature: inspect.Signature | None) -> bool:
        if isinstance(value, Placeholder):
            return True
        if not isinstance(value, str) or signature is None or key not in signature.parameters:
            return False
        parameter = signature.parameters[key]
        if isinstance(parameter.default, str):
            return False
        module = inspect.getmodule(self.m)
        accepts = _accepts_str(parameter.annotation, vars(module) if module else {})
        if accepts is None:
            return parameter.default is not inspect.Parameter.empty and parameter.default is not None
        return not accepts

    def assemble(self, *args: Any, **kwargs: Any) -> nn.Module:
        """Instantiate the module, resolving placeholders from ``kwargs`` and passing ``args`` positionally."""
        name = getattr(self.m, "__name__", repr(self.m))
        signature = self._signature()
        resolved: dict[str, Any] = {}
        consumed: set[str] = set()
        for key, value in self.kwargs.items():
            if isinstance(value, str) and value in kwargs:
                resolved[key] = kwargs[value]
                consumed.add(value)
            elif self._is_unresolved(key, value, signature):
                raise TypeError(f"LayerT({name}): placeholder {str(value)!r} for argument {key!r} was not given; "
                                f"call assemble({value}=...)")
            else:
                resolved[key] = value
        rest = {k: v for k, v in kwargs.items() if k not in consumed}
        if rest and signature is not None:
            accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
            unknown = [k for k in rest if k not in signature.parameters] if not accepts_any else []
            if unknown:
                raise TypeError(f"LayerT({name}).assemble() got keyword(s) {unknown} that match no placeholder "
                                f"(stored: {self.kwargs}) and no parameter of {name}")
        clash = set(rest) & set(resolved)
        if clash:
            raise TypeError(f"LayerT({name}).assemble() got {sorted(clash)} that are already stored; use update()")
        return self.m(*args, **resolved, **rest)

    def update(self, *, must_exist: bool = True, **kwargs: Any) -> Self:
        """A new descriptor with ``kwargs`` changed; with ``must_exist`` only already stored keys may change."""
        missing = set(kwargs) - set(self.kwargs)
        if must_exist and missing:
            raise KeyError(f"LayerT({getattr(self.m, '__name__', self.m)}).update(): {sorted(missing)} are not "
                           f"stored (stored: {sorted(self.kwargs)}); pass must_exist=False to add them")
        return type(self)(self.m, **{**self.kwargs, **kwargs})

    def copy(self) -> Self:
        """An independent descriptor with the same module type and arguments."""
        return type(self)(self.m, **dict(self.kwargs))


def auto_device() -> torch.device:
    """The CUDA device with the most free memory (``torch.cuda.mem_get_info``), else MPS, else the CPU."""
    if torch.cuda.is_available():
        free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
        return torch.device("cuda", max(range(len(free)), key=free.__getitem__))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class HasDevice:
    """Something that places its work on one device, chosen at construction (``"auto"`` picks one)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self._device = auto_device() if device == "auto" else torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    @device.setter
    def device(self, device: str | torch.device) -> None:
        self._device = auto_device() if device == "auto" else torch.device(device)


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module under a ``torch.compile`` wrapper (its weights have the plain names)."""
    return getattr(model, "_orig_mod", model)


class WithNetwork(HasDevice, ABC):
    """A component that builds a network and moves its weights to and from safetensors checkpoints."""

    @abstractmethod
    def build_network(self, example_shape: Sequence[int]) -> nn.Module:
        """Build the network for ONE input of ``example_shape`` (channels first, no batch axis)."""

    def compile_model(self, model: nn.Module) -> nn.Module:
        """``torch.compile`` hook; override to pass options or to skip it."""
        return torch.compile(model)  # type: ignore[return-value]

    def load_model(self, example_shape: Sequence[int], *, checkpoint: str | PathLike[str] | None = None,
                   compile_model: bool = False) -> nn.Module:
        """Build the network, load ``checkpoint`` weights if given, move it to the device, maybe compile it."""
        model = self.build_network(example_shape)
        if checkpoint is not None:
            load_weights(model, checkpoint)
        model = model.to(self.device)
        return self.compile_model(model) if compile_model else model

    @staticmethod
    def save_model(model: nn.Module, path: str | PathLike[str]) -> None:
        """Save the weights as safetensors, atomically."""
        save_weights(model, path)


def save_weights(model: nn.Module, path: str | PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s state (compile wrapper removed) to a safetensors file, atomically.

    safetensors' ``save_model`` stores a tensor registered under several names (MONAI's DynUNet registers its
    heads twice) once; :func:`load_weights` restores the aliases.
    """
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(unwrap_compiled(model), str(tmp), metadata=metadata)


def load_weights(model: nn.Module, path: str | PathLike[str]) -> None:
    """Load safetensors weights into ``model``; a mismatch names the missing and unexpected keys."""
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    hint = "Was it trained with another bundle or other options?"
    try:
        missing, unexpected = load_model(unwrap_compiled(model), str(path), strict=False,
                                         device=str(next(model.parameters(), torch.zeros(0)).device))
    except RuntimeError as error:  # shape mismatches
        raise RuntimeError(f"checkpoint {path} does not fit the network: {error}. {hint}") from None
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not fit the network: missing {missing[:10]}, "
                           f"unexpected {unexpected[:10]}. {hint}")
