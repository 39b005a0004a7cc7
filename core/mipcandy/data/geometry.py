"""Physical geometry of an image grid: spacing, origin and direction, kept beside channel-first tensors."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import SimpleITK as sitk


def _floats(values: Sequence[float], name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Geometry {name} must be a sequence of numbers, got {values!r}") from err
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"Geometry {name} must be finite, got {out}")
    return out


@dataclass(frozen=True)
class Geometry:
    """Where the voxels of a tensor sit in patient space, so predictions can be written back aligned.

    ``spacing`` is in tensor axis order ((z, y, x) for 3D, like nnU-Net's numpy order), while ``origin`` and
    ``direction`` keep SimpleITK's physical order ((x, y, z); ``direction`` is the row-major ndim x ndim matrix
    whose columns are the directions of x, y, z). Values are Python floats, so copying a geometry from one
    SimpleITK image to another, or through :meth:`to_dict` / JSON, is exact.
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def __post_init__(self) -> None:
        spacing = _floats(self.spacing, "spacing")
        origin = _floats(self.origin, "origin")
        direction = _floats(self.direction, "direction")
        ndim = len(spacing)
        if ndim == 0 or len(origin) != ndim or len(direction) != ndim * ndim:
            raise ValueError(
                f"Inconsistent geometry: {ndim} spacing values need {ndim} origin values and {ndim * ndim} direction "
                f"values, got {len(origin)} and {len(direction)}"
            )
        if any(s <= 0 for s in spacing):
            raise ValueError(f"Geometry spacing must be positive, got {spacing}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return len(self.spacing)

    @classmethod
    def identity(cls, ndim: int, spacing: Sequence[float] | None = None) -> Geometry:
        """The geometry SimpleITK gives an image that carries none: unit spacing, zero origin, identity direction."""
        direction = tuple(1.0 if i == j else 0.0 for i in range(ndim) for j in range(ndim))
        return cls(tuple(spacing) if spacing is not None else (1.0,) * ndim, (0.0,) * ndim, direction)

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        """Read the geometry of a SimpleITK image (spacing reversed into tensor axis order)."""
        return cls(tuple(reversed(image.GetSpacing())), image.GetOrigin(), image.GetDirection())

    def apply_to(self, image: sitk.Image) -> None:
        """Copy this geometry onto a SimpleITK image in place."""
        if image.GetDimension() != self.ndim:
            raise ValueError(f"Cannot apply a {self.ndim}D geometry to a {image.GetDimension()}D image")
        image.SetSpacing(tuple(reversed(self.spacing)))
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-safe form; ``json`` writes floats with ``repr``, so the round trip is exact."""
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        missing = {"spacing", "origin", "direction"} - set(data)
        if missing:
            raise ValueError(f"Geometry dict lacks {sorted(missing)}; expected keys spacing, origin, direction")
        return cls(data["spacing"], data["origin"], data["direction"])

    def resized(self, shape: Sequence[int], new_shape: Sequence[int]) -> Geometry:
        """Geometry of the same physical extent sampled on ``new_shape`` voxels instead of ``shape``.

        This is the grid that extent-preserving (``align_corners=False``) resampling produces: voxel edges of
        the first and last voxels stay put, so the spacing scales by ``shape / new_shape`` and the centre of
        the first voxel moves by half the change of the voxel size along each axis.
        """
        if len(shape) != self.ndim or len(new_shape) != self.ndim:
            raise ValueError(f"{self.ndim}D geometry needs {self.ndim}D shapes, got {tuple(shape)}, {tuple(new_shape)}")
        spacing = tuple(s if n == m else s * n / m for s, n, m in zip(self.spacing, shape, new_shape, strict=True))
        # Offsets of the new first voxel centre along the image axes, in physical order (x, y, z).
        shift = [(new - old) / 2 for new, old in zip(reversed(spacing), reversed(self.spacing), strict=True)]
        n = self.ndim
        origin = tuple(
            self.origin[row] + sum(self.direction[row * n + col] * shift[col] for col in range(n)) for row in range(n)
        )
        return Geometry(spacing, origin, self.direction)
