"""The drift reference evaluation writes: the same forward pass's probabilities and embeddings of
every test image, read back without TensorFlow, and carried into a candidate's served folder."""

from __future__ import annotations

import pytest

from cnnops.core.errors import CnnopsError
from cnnops.monitoring.reference import REFERENCE_FILE, read_reference


def test_no_reference_is_an_absence_and_a_broken_one_an_error(tmp_path):
    assert read_reference(tmp_path) is None
    (tmp_path / REFERENCE_FILE).write_bytes(b"\x93NUMPY broken")
    with pytest.raises(CnnopsError, match="is not a readable drift reference .*; evaluate the model again"):
        read_reference(tmp_path)
