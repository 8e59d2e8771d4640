from __future__ import annotations

import pytest
import redis
from inspect_scenario import Scenario, build


@pytest.fixture
def scenario(r: redis.Redis) -> Scenario:
    return build(r)
