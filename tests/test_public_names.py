"""The paper's and the README's names import from ``mipcandy``; the lazy tables, the names for type checkers and
the README's table of renamed reference names stay complete and in step."""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import mipcandy
import mipcandy.data

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
MAPPING_TITLE = "## Names from the paper and the reference API"

# The names the paper uses (Fu & Chen 2026, "MIP Candy: A Modular PyTorch Framework for Medical Image Processing",
# arXiv 2602.21033), with where each comes from; a reader writes them as ``from mipcandy import X``.
PAPER_NAMES = {
    "create_hybrid_frontend": "section 4.3 (frontend integrations)",
    "visualize3d": "section 4.3 (previews), 6",
    "LayerT": "section 1 (contribution 1), 4.2",
    "ConvBlock2d": "section 4.2",
    "SegmentationTrainer": "sections 1, 3, 4.3, 5, 7.1",
    "Trainer": "section 4.3",
    "TrainerToolbox": "sections 3, 4.3",
    "DeepSupervisionWrapper": "sections 3, 4.3",
    "BinarizedDataset": "sections 3, 4.1",
    "NNUNetDataset": "section 4.1",
    "load_image": "section 4.1",
    "fast_save": "section 4.1",
    "fast_load": "section 4.1",
    "inspect": "sections 4.1, 7.2, Table 1",
    "RandomROIDataset": "sections 4.1, 7.2",
    "quotient_regression": "sections 1 (contribution 4), 4.3",
    "Predictor": "sections 4.4, 5",
    "parse_predictant": "section 4.4",
    "Evaluator": "section 4.4",
    "EvalResult": "section 4.4",
    "binary_dice": "section 4.4, Table 2",
    "dice_similarity_coefficient": "section 4.4, Table 2",
    "soft_dice": "section 4.4, Table 2",
}

# The public names of the reference API's module map (the reference document on MIPCandy 1.1.3, "Module map"),
# plus the methods and functions it describes that were renamed here. Each is either a top-level name here or a
# row of the README's table.
REFERENCE_NAMES = [
    "LayerT", "HasDevice", "auto_device", "WithPaddingModule", "WithNetwork", "batch_int_multiply",
    "batch_int_divide", "ConvBlock2d", "ConvBlock3d", "WSConv2d", "WSConv3d", "Pad2d", "Pad3d", "Restore2d",
    "Restore3d", "PadTo", "Normalize", "CTNormalize", "ColorizeLabel", "quotient_regression", "quotient_derivative",
    "quotient_bounds", "Loss", "SegmentationLoss", "DiceCELossWithLogits", "DiceBCELossWithLogits",
    "FocalBCEWithLogits", "PolyLRScheduler", "AbsoluteLinearLR", "Trainer", "TrainerToolbox", "set_seed",
    "TrainerTracker", "SegmentationTrainer", "DeepSupervisionWrapper", "parse_predictant", "Predictor",
    "StreamPredictor", "EvalCase", "EvalResult", "Evaluator", "do_reduction", "binary_dice",
    "dice_similarity_coefficient", "soft_dice", "num_trainable_params", "model_complexity_info", "SanityCheckResult",
    "sanity_check", "Loader", "TensorLoader", "UnsupervisedDataset", "SupervisedDataset", "DatasetFromMemory",
    "MergedDataset", "PathBasedSupervisedDataset", "PathBasedUnsupervisedDataset", "SimpleDataset", "NNUNetDataset",
    "BinarizedDataset", "InspectionAnnotation", "InspectionAnnotations", "inspect", "load_inspection_annotations",
    "ROIDataset", "RandomROIDataset", "load_image", "save_image", "fast_save", "fast_load", "resample_to_isotropic",
    "empty_cache", "convert_ids_to_logits", "convert_logits_to_ids", "auto_convert", "ensure_num_dimensions",
    "orthographic_views", "crop", "JointTransform", "MONAITransform", "visualize2d", "visualize3d", "overlay",
    "download_dataset", "Frontend", "NotionFrontend", "WandBFrontend", "create_hybrid_frontend", "Profiler",
    "load_settings", "save_settings", "load_secrets", "save_secrets", "Shape", "AmbiguousShape", "Device",
    "Transform", "SupportedPredictant", "Paddings", "Settings",
    # renamed methods and arguments
    "roi_shape", "intensity_stats", "predict_image", "save_predictions", "build_network_from_checkpoint",
    "train_with_settings", "predict_maximum_validation_score", "apply_non_linearity", "get_padding_module",
    "get_restoring_module",
]


def readme_python_names() -> set[str]:
    """Names the README's Python blocks take from ``mipcandy`` or its subpackages, or read as ``mipcandy.X``."""
    names: set[str] = set()
    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mipcandy":
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "mipcandy":
                names.add(node.attr)
    return names


def type_checking_imports(package: ModuleType) -> dict[str, str]:
    """``{name: module}`` of the package's ``if TYPE_CHECKING:`` block."""
    tree = ast.parse(Path(package.__file__).read_text(encoding="utf-8"))
    blocks = [node for node in tree.body if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
              and node.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1, f"{package.__name__} needs exactly one `if TYPE_CHECKING:` block"
    imports = {}
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom) and node.module, ast.unparse(node)
        for alias in node.names:
            assert alias.asname in (None, alias.name), f"{alias.name} must keep its name"
            imports[alias.asname or alias.name] = node.module
    return imports


@pytest.mark.parametrize("package", [mipcandy, mipcandy.data], ids=lambda p: p.__name__)
def test_type_checking_block_and_lazy_table_list_the_same_names(package: ModuleType) -> None:
    assert type_checking_imports(package) == package._LAZY


@pytest.mark.parametrize("package", [mipcandy, mipcandy.data], ids=lambda p: p.__name__)
def test_every_lazy_name_resolves_from_the_module_that_defines_it(package: ModuleType) -> None:
    for name, module in package._LAZY.items():
        value = getattr(package, name)
        assert value is getattr(importlib.import_module(module), name)
        defined_in = getattr(value, "__module__", module)
        assert defined_in == module, f"{package.__name__}.{name} points at {module}, but is defined in {defined_in}"


def test_the_paper_and_readme_names_import_from_the_top_level() -> None:
    names = readme_python_names() | set(PAPER_NAMES)
    assert {"LayerT", "build_network", "NNUNetDataset", "inspect"} <= names  # the parsing found them
    missing = sorted(n for n in names if n not in mipcandy.__all__)
    assert not missing, f"not importable as `from mipcandy import ...`: {missing}"
    for name in names:
        getattr(mipcandy, name)


def test_every_reference_name_is_kept_or_in_the_readme_table() -> None:
    assert MAPPING_TITLE in README
    section = README.split(MAPPING_TITLE, 1)[1].split("\n## ", 1)[0]
    mentioned = {word for span in re.findall(r"`([^`]+)`", section) for word in re.findall(r"\w+", span)}
    missing = [n for n in REFERENCE_NAMES if n not in mipcandy.__all__ and n not in mentioned]
    assert not missing, f"reference names neither kept nor listed in the README table: {missing}"


def test_renamed_reference_names_warn_once_and_resolve_to_the_new_object() -> None:
    assert set(mipcandy._RENAMED.values()) <= set(mipcandy._LAZY)
    assert not set(mipcandy._RENAMED) & set(mipcandy.__all__)
    code = ("import warnings, mipcandy\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    first = mipcandy.InspectionAnnotation\n"
            "    second = mipcandy.InspectionAnnotation\n"
            "    from mipcandy import InspectionAnnotation as third\n"
            "print(len(caught), caught[0].category.__name__, caught[0].filename,\n"
            "      first is second is third is mipcandy.CaseAnnotation, 'InspectionAnnotation' in mipcandy.__all__)\n"
            "print(caught[0].message)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    summary, message = result.stdout.splitlines()
    assert summary == "1 DeprecationWarning <string> True False"  # once, attributed to the caller's line
    assert "mipcandy.CaseAnnotation" in message


def test_top_level_names_stay_lazy() -> None:
    code = ("import sys, mipcandy\nfrom mipcandy import hookimpl, lazy_attributes\nnames = dir(mipcandy)\n"
            "print(sorted(m for m in ('torch', 'numpy', 'SimpleITK', 'monai') if m in sys.modules), "
            "'Predictor' in names, 'InspectionAnnotation' in names)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] True False"


def test_unknown_names_still_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'InspectionAnnotationz'"):
        mipcandy.InspectionAnnotationz  # noqa: B018
