import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    from workbench.config import WorkbenchConfig
    from workbench.models import ModelStack

    s = ModelStack(WorkbenchConfig(state_dir=tmp_path_factory.mktemp("state")))
    yield s
    s.close()
