import asyncio
import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    from workbench.core.config import WorkbenchConfig
    from workbench.models import ModelStack

    s = ModelStack(WorkbenchConfig(state_dir=tmp_path_factory.mktemp("state")))
    yield s
    s.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One loop for every round: pooled keep-alive connections stay valid, as in a running worker."""
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()
