"""Shared test setup."""

import pytest

from widelimits.testing import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tests use tiny tensors, for which torch's intra-op threads cost more than they save
    # (much more on a busy machine): see widelimits.testing.single_thread.
    with single_thread():
        yield
