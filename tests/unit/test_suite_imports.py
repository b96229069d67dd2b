"""A suite's ``imports:`` registers the user's own strategies before they are built."""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.faults.endpoint import ScriptedEndpoint
from workbench.testing.worlds import make_dataset, scripted_stack
from workbench.workflows import Suite, arun, load_run

MODULE = '''
from workbench.strategies import register
from workbench.strategies.builtin import PlainStrategy


@register
class UserPlain(PlainStrategy):
    """Plain, registered from the user's own module."""

    kind = "user_plain_for_test"
'''


async def test_suite_imports_register_user_strategies(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_strategies_for_test.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    ds = make_dataset(tmp_path / "ds", conversations=1, turns=1)
    suite = Suite(dataset=ds, imports=["my_strategies_for_test"], strategies={"mine": "user_plain_for_test"})
    async with ScriptedEndpoint() as ep:
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=scripted_stack(ep, tmp_path), progress=False)
    df = load_run(res.path)
    assert df["strategy"].tolist() == ["mine"] and df["answer"].tolist() == ["You said: question 0.0"]
    sys.modules.pop("my_strategies_for_test", None)
