"""Durable results: a kill at any instant leaves a readable run, resume completes it exactly, one writer at a time.

(Text-mode SIGKILL + resume and the in-process lock are in test_replay_text.py; these add compaction,
torn journal lines followed by a resumed writer, voice-mode resume and the command line's refusal.)
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.schema import KEY
from workbench.core.store import JOURNAL_FILE, TURNS_FILE, RunStore, read_rows
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.faults.speech import tone
from workbench.workflows import Suite, arun, load_run
from workbench.workflows.faults import FaultStack, fault_config
from workbench.workflows.suite import VoiceOptions

ROW = dict(strategy="plain", mode="text", voice="", conversation_id="c", repetition=0)

WRITER = """
import sys
from pathlib import Path
from workbench.core.store import RunStore, read_rows
path, start = Path(sys.argv[1]), int(sys.argv[2])
store = RunStore(path)
blob = "x" * 20000  # rows as large as real ones (contexts, LiveKit metrics): several write() calls each
for i in range(start, start + 100000):
    store.append({"strategy": "plain", "mode": "text", "voice": "", "conversation_id": "c", "repetition": 0,
                  "turn_index": i, "answer": f"a{i}", "lk_metrics": blob})
    print(i, flush=True)  # acknowledged: the row is with the OS
    store.compact()  # most of the time goes here: a kill lands mid-compaction
"""


def test_kill_during_compaction_leaves_a_readable_run_and_loses_no_acknowledged_row(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    run = tmp_path / "run"
    rng = random.Random(7)
    acked = -1
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(run), str(acked + 1)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the writer is up and has stored a row
        assert first.strip() == str(acked + 1)
        for _ in range(rng.randint(3, 6)):  # a few more rows acknowledged, however fast the machine is
            proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.05))  # then a kill somewhere in the next append or compaction
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        acked = int([first, *proc.stdout.read().split()][-1])
        proc.stdout.close()
        df = read_rows(run)  # never raises: the Parquet is whole (old or new), a torn last line is skipped
        assert df["turn_index"].tolist() == list(range(len(df))), "rows missing or duplicated"
        assert len(df) >= acked + 1  # every acknowledged row survived the kill
        if (run / TURNS_FILE).exists():
            assert len(pd.read_parquet(run / TURNS_FILE)) <= len(df)
        acked = len(df) - 1  # the next writer resumes after what is stored
        RunStore(run).close()  # the OS released the dead writer's lock
    assert acked >= 8, "the writer never got going: the test did not exercise compaction"


def test_a_resumed_writer_after_a_torn_line_and_a_stale_temp_file_loses_nothing(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "r")
    store.append({**ROW, "turn_index": 0, "answer": "a"})
    store.compact()
    store.append({**ROW, "turn_index": 1, "answer": "b"})
    store.close()
    # a writer killed mid-line and mid-compaction: a cut JSON line and a half-written temporary Parquet
    with open(tmp_path / "r" / JOURNAL_FILE, "a") as f:
        f.write('{"strategy": "plain", "mode": "text", "turn_ind')
    (tmp_path / "r" / f".{TURNS_FILE}.99999.tmp").write_bytes(b"PAR1\x00\x00half")
    assert read_rows(tmp_path / "r")["answer"].tolist() == ["a", "b"]
    resumed = RunStore(tmp_path / "r")
    resumed.append({**ROW, "turn_index": 2, "answer": "c"})  # must not be glued onto the torn line
    resumed.close()
    assert read_rows(tmp_path / "r")["answer"].tolist() == ["a", "b", "c"]
    again = RunStore(tmp_path / "r")
    again.compact()
    again.close()
    assert pd.read_parquet(tmp_path / "r" / TURNS_FILE)["answer"].tolist() == ["a", "b", "c"]


HOLDER = """
import sys, time
from pathlib import Path
from workbench.core.store import RunStore
store = RunStore(Path(sys.argv[1]))
print("holding", flush=True)
time.sleep(60)
"""


def test_cli_resume_of_a_run_another_process_is_writing_is_refused_with_exit_2(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "busy"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"run_id": "busy", "suite": {}, "status": "interrupted"}))
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        out = CliRunner().invoke(
            app, ["run", "--resume", "busy", "--runs-dir", str(tmp_path / "runs"), "-q"], env={"COLUMNS": "200"}
        )
        assert out.exit_code == 2, out.output
        assert f"run busy is being written by pid {holder.pid}" in out.output
        assert "wait for it or use another run id" in out.output
        assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"  # untouched
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


# -- voice mode: SIGKILL mid-call, resume, same rows ------------------------------------------------------
def voice_dataset(root: Path, conversations: int = 2, turns: int = 3) -> dict[float, str]:
    (root / "knowledge").mkdir(parents=True)
    (root / "knowledge" / "a.md").write_text("Open 8 am to 6 pm.\n")
    (root / "audio").mkdir()
    tones, lines = {}, []
    for c in range(conversations):
        conv_turns = []
        for t in range(turns):
            freq, user = 300.0 + 40 * len(tones), f"question {c} {t}"
            tones[freq] = user
            rel = f"audio/c{c}_{t}.wav"
            pcm = np.concatenate([np.zeros(1600), tone(freq, 0.4), np.zeros(3200)]).astype(np.float32)
            sf.write(root / rel, pcm, 16000, subtype="PCM_16")
            conv_turns.append(
                {
                    "user": user,
                    "audio": {"tone": rel},
                    "audio_meta": {"tone": {"speech_start_s": 0.1, "speech_end_s": 0.5}},
                }
            )
        lines.append(json.dumps({"id": f"c{c}", "tags": [], "turns": conv_turns}))
    (root / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    return tones


VOICE_RUNNER = """
import json, sys
from pathlib import Path
from workbench.workflows import Suite, run
from workbench.workflows.faults import FaultStack, fault_config
from workbench.workflows.suite import VoiceOptions
url, ds, runs, run_id = sys.argv[1:5]
tones = {float(k): v for k, v in json.loads(Path(ds, "tones.json").read_text()).items()}
stack = FaultStack(fault_config(url, url, Path(runs) / "state"), tones)
suite = Suite(dataset=Path(ds), mode="voice", voice=VoiceOptions(variants=["tone"], concurrency=2))
run(suite, run_id=run_id, resume=run_id if len(sys.argv) > 5 else None, runs_dir=Path(runs), stack=stack,
    progress=False)
"""


@pytest.mark.timeout(120)
async def test_voice_run_killed_mid_call_resumes_to_the_rows_of_an_uninterrupted_run(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    tones = voice_dataset(ds)
    (ds / "tones.json").write_text(json.dumps(tones))
    script = tmp_path / "voice_runner.py"
    script.write_text(VOICE_RUNNER)
    runs = tmp_path / "runs"
    with ScriptedEndpoint(Script(ttft_s=0.03, gap_s=0.005)) as ep:
        stack = FaultStack(fault_config(ep.base_url, ep.base_url, tmp_path / "state"), tones)
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["tone"], concurrency=2))
        await arun(suite, run_id="full", runs_dir=runs, stack=stack, progress=False)
        base = [sys.executable, str(script), ep.base_url, str(ds), str(runs), "killed"]
        proc = subprocess.Popen(base)
        journal = runs / "killed" / JOURNAL_FILE
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:  # kill mid-call, once each call has a stored turn
            if journal.exists() and journal.read_text().count("\n") >= 2:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        partial = read_rows(runs / "killed")
        assert 2 <= len(partial) < 6
        subprocess.run([*base, "resume"], check=True, timeout=90)
    full, resumed = load_run(runs / "full"), load_run(runs / "killed")
    cols = [*KEY, "user_text", "transcript", "answer", "error_kind"]
    assert len(full) == 6 and full["error_kind"].isna().all()
    assert (full["transcript"] == full["user_text"]).all()
    pd.testing.assert_frame_equal(full[cols].reset_index(drop=True), resumed[cols].reset_index(drop=True))
    # the resumed call continued from its stored history: the last turn's request carried the first turns
    last = [r for r in ep.chat_requests if r.user_text == "question 0 2"][-1]
    assert "You said: question 0 0" in json.dumps(last.messages)
    assert (
        resumed["v2v_s"].notna().all()
        and json.loads((runs / "killed" / "manifest.json").read_text())["status"] == "complete"
    )
    # each call's recording holds every turn: the interrupted session's part, then the resumed one's (the rows'
    # offsets moved past the seam), as long as the uninterrupted call give or take the lost turn's time
    for conv, calls in resumed.groupby("conversation_id"):
        offsets = calls.sort_values("turn_index")["call_offset_s"].tolist()
        assert offsets == sorted(offsets) and len(set(calls["call_audio"])) == 1, conv
        heard = sf.info(str(runs / "killed" / calls["call_audio"].iloc[0])).duration
        whole = sf.info(str(runs / "full" / full[full["conversation_id"] == conv]["call_audio"].iloc[0])).duration
        assert offsets[-1] < heard and heard >= 0.8 * whole, conv
        assert calls["heard_v2v_s"].notna().all(), conv
