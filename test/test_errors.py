"""One error root: every error imp raises on purpose is an ImpError, keeps the builtin base its callers catch, and
the `imp` command turns it into a one-line message with exit code 2."""
from __future__ import annotations

import pytest

from imp_core.cli import main
from imp_core.config import ConfigError
from imp_core.datasets.base import DatasetError
from imp_core.device import DeviceError
from imp_core.errors import ImpError
from imp_core.eval.formats import FormatError
from imp_core.features.weights import WeightsError, WeightsNotFoundError, user_weight_path
from imp_core.imageio import ImageTooLargeError
from imp_core.localization.distributed import RayUnavailable, WorkerFailed
from imp_core.mapping.format import MapError
from imp_core.paths import UnsafePathError
from imp_core.registry import Registry, UnknownModelError
from imp_core.training.safe_npz import UnsafePickleError
from imp_core.types import CameraError

ERRORS = {  # class -> the builtin base callers may catch
    ConfigError: ValueError, DatasetError: ValueError, FormatError: ValueError, WeightsError: ValueError,
    WeightsNotFoundError: FileNotFoundError, ImageTooLargeError: ValueError, UnsafePathError: ValueError,
    UnsafePickleError: ValueError, CameraError: ValueError, MapError: RuntimeError, RayUnavailable: RuntimeError,
    WorkerFailed: RuntimeError, UnknownModelError: KeyError, DeviceError: RuntimeError,
}


@pytest.mark.parametrize("cls", list(ERRORS), ids=lambda c: c.__name__)
def test_every_error_has_the_one_root_and_keeps_its_builtin_base(cls):
    assert issubclass(cls, ImpError)
    assert issubclass(cls, ERRORS[cls])


def test_a_weight_file_that_does_not_fit_is_not_a_missing_file(tmp_path):
    assert not issubclass(WeightsError, FileNotFoundError)
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        user_weight_path(tmp_path / "nope.pth", "superpoint")
    with pytest.raises(WeightsError) as e:
        user_weight_path(None, "superpoint")
    assert not isinstance(e.value, FileNotFoundError)


def test_unknown_model_message_is_printed_unquoted():
    reg = Registry("widget")
    with pytest.raises(UnknownModelError) as e:
        reg.get("gizmo")
    assert str(e.value) == "unknown widget 'gizmo'; available: "
    assert isinstance(e.value, KeyError)


def test_cli_prints_an_imp_error_and_exits_2(tmp_path, capsys):
    assert main(["map", "info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imp map: error:")
    assert "map directory not found" in err
    assert "Traceback" not in err
