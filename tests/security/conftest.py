from __future__ import annotations

import pytest

from ansflow.config import Settings
from tests.conftest import REDIS_URL


@pytest.fixture
def arq_settings(settings: Settings) -> Settings:
    """MariaDB + Redis with a queue of this test's own; short leases."""
    return settings.model_copy(update={"redis_url": REDIS_URL, "execution_backend": "arq",
                                       "lease_seconds": 3.0})
