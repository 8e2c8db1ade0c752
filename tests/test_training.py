"""Recording attention through training with a real ``transformers.Trainer`` on a tiny GPT-2 (real GPT-2 BPE).

* the callback writes one run per recorded step, all on the same probe (fingerprint), with the logged loss;
* the recorded metrics equal those of a direct forward of the Trainer's saved checkpoint at that step;
* recording does not change the training (same weights with and without the callback);
* a kill during training leaves the series readable, and the resumed training continues it;
* another probe, another model, or a new training into a used series is refused with one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from training_helpers import PROBE, RandomTokens, gpt2_tokenizer, make_trainer, tiny_model

from attnviz.pipeline.metrics import attention_metrics
from attnviz.pipeline.store import StoreReader, StoreWriter, series_checkpoints, verify_store
from attnviz.pipeline.store.series import SeriesError
from attnviz.pipeline.training.callback import AttnvizCallback
from attnviz.pipeline.training.probe import Probe
from attnviz.pipeline.training.record import record_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerBase:
    return gpt2_tokenizer()


def trainer(folder: Path, tokenizer, callbacks: list, *, steps: int = 6, save_steps: int = 1000
            ) -> transformers.Trainer:
    return make_trainer(folder, tokenizer, callbacks, steps=steps, save_steps=save_steps)


def test_callback_writes_one_run_per_recorded_step_on_one_probe(tmp_path: Path, tokenizer) -> None:
    store = tmp_path / "s.h5"
    cb = AttnvizCallback(store, PROBE, every=2, series="tiny")
    t = trainer(tmp_path, tokenizer, [cb], steps=6)
    t.train()
    runs = StoreWriter(store).runs()
    cps = series_checkpoints(runs, "tiny")
    assert [c.step for c in cps] == [0, 2, 4, 6]
    assert sorted(runs) == [c.run for c in cps]  # nothing else written
    assert len({c.probe_fingerprint for c in cps}) == 1
    assert all(runs[c.run].num_examples == 5 and c.complete for c in cps)
    logged = {row["step"]: row for row in t.state.log_history if "loss" in row}
    assert cps[0].loss is None  # nothing trained yet at step 0
    for c in cps[1:]:  # the Trainer logged at each recorded step (the callback asked it to)
        assert c.loss == pytest.approx(logged[c.step]["loss"])
        assert c.learning_rate == pytest.approx(logged[c.step]["learning_rate"])
        assert c.epoch == pytest.approx(logged[c.step]["epoch"])
        assert [row[0] for row in c.log] == [c.step]
    with StoreReader(store) as reader:
        first, last = cps[0].run, cps[-1].run
        np.testing.assert_array_equal(reader.token_ids(first, 3), reader.token_ids(last, 3))
        ids = reader.token_ids(first, 3)
        np.testing.assert_array_equal(ids[:6], ids[6:])  # the probe repeats each random sequence
        assert reader.run_info(last).meta["series"]["name"] == "tiny"
        assert not np.array_equal(reader.metrics(first, "entropy"), reader.metrics(last, "entropy"))


def test_recorded_metrics_equal_a_direct_forward_of_the_checkpoint(tmp_path: Path, tokenizer) -> None:
    """The run at step 4 against the Trainer's own checkpoint-4, loaded and run one example at a time."""
    store = tmp_path / "s.h5"
    t = trainer(tmp_path, tokenizer, [AttnvizCallback(store, PROBE, every=2, series="tiny")], steps=6,
                save_steps=4)
    t.train()
    saved = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out" / "checkpoint-4",
                                                         attn_implementation="eager").eval()
    with StoreReader(store) as reader:
        run = "tiny--step00000004"
        for i in range(reader.num_examples(run)):
            ids = reader.token_ids(run, i)
            with torch.no_grad():
                out = saved(torch.as_tensor(ids[None], dtype=torch.long), output_attentions=True)
            attn = torch.stack(out.attentions, 1).numpy()  # [1, L, H, T, T]
            t_len = ids.shape[0]
            ones = np.ones((1, t_len), bool)
            want = attention_metrics(attn, ones, ones, reader.token_flags(run, i)[None], causal=True,
                                     self_attention=True, key_ids=ids[None].astype(np.int64))
            for name, values in want.items():
                np.testing.assert_allclose(reader.metrics(run, name)[i], values[0], rtol=2e-4, atol=2e-5,
                                           err_msg=name)
            np.testing.assert_allclose(reader.attention(run, i).astype(np.float32), attn[0], atol=1e-3)


def test_recording_does_not_change_the_training(tmp_path: Path, tokenizer) -> None:
    plain = trainer(tmp_path / "a", tokenizer, [], steps=4)
    plain.train()
    recorded = trainer(tmp_path / "b", tokenizer, [AttnvizCallback(tmp_path / "s.h5", PROBE, every=1, series="x")],
                       steps=4)
    recorded.train()
    for (name, a), b in zip(plain.model.state_dict().items(), recorded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert len(series_checkpoints(StoreWriter(tmp_path / "s.h5").runs(), "x")) == 5


def test_another_probe_is_refused_before_any_step(tmp_path: Path, tokenizer) -> None:
    store = tmp_path / "s.h5"
    trainer(tmp_path, tokenizer, [AttnvizCallback(store, PROBE, every=2, series="tiny")], steps=2).train()
    before = StoreWriter(store).runs()
    other = trainer(tmp_path, tokenizer, [AttnvizCallback(store, "random:length=6,count=5,seed=2,repeat=2",
                                                          every=2, series="tiny")], steps=2)
    with pytest.raises(SeriesError, match="recorded on another probe") as err:
        other.train()
    assert "\n" not in str(err.value) and "another series name" in str(err.value)
    assert other.state.global_step == 0
    assert StoreWriter(store).runs().keys() == before.keys()


def test_a_new_training_into_a_used_series_is_refused(tmp_path: Path, tokenizer) -> None:
    store = tmp_path / "s.h5"
    trainer(tmp_path, tokenizer, [AttnvizCallback(store, PROBE, every=2, series="tiny")], steps=2).train()
    with pytest.raises(SeriesError, match="already holds steps up to 2"):
        trainer(tmp_path, tokenizer, [AttnvizCallback(store, PROBE, every=2, series="tiny")], steps=2).train()


def test_record_checkpoint_in_a_custom_loop(tmp_path: Path, tokenizer) -> None:
    store = tmp_path / "s.h5"
    model = tiny_model(tokenizer)
    probe = Probe(PROBE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(3):
        summary = record_checkpoint(model, tokenizer, store, "loop", step, probe, loss=1.5 if step else None)
        assert not summary.already_recorded and summary.examples == 5
        assert model.training  # put back in training mode
        batch = RandomTokens()[step]["input_ids"][None]
        model(batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    again = record_checkpoint(model, tokenizer, store, "loop", 2, probe)
    assert again.already_recorded
    with pytest.raises(SeriesError, match="another probe"):
        record_checkpoint(model, tokenizer, store, "loop", 3, "random:length=5,count=5,seed=1,repeat=2")
    with pytest.raises(SeriesError, match="records model 'loop'"):
        record_checkpoint(model, tokenizer, store, "loop", 3, probe, model_info="gpt2-random")
    cps = series_checkpoints(StoreWriter(store).runs(), "loop")
    assert [(c.step, c.loss) for c in cps] == [(0, None), (1, 1.5), (2, 1.5)]


KILL_SCRIPT = """
import sys, time, numpy as np, torch, transformers
sys.path.insert(0, {tests!r})
from training_helpers import RandomTokens, gpt2_tokenizer, tiny_model
from attnviz.pipeline.training.callback import AttnvizCallback
torch.set_num_threads(1)
tok = gpt2_tokenizer()

class Slow(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        time.sleep({sleep})

args = transformers.TrainingArguments(output_dir={out!r}, max_steps=12, per_device_train_batch_size=4,
    learning_rate=5e-3, logging_steps=1000, save_steps=2, report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
cb = AttnvizCallback({store!r}, {probe!r}, every=2, series="killed")
t = transformers.Trainer(model=tiny_model(tok), args=args, train_dataset=RandomTokens(), processing_class=tok,
                         callbacks=[Slow(), cb])
t.train(resume_from_checkpoint={resume})
"""


def _train_process(tmp_path: Path, *, resume: Path | None, sleep: float) -> subprocess.Popen:
    script = KILL_SCRIPT.format(tests=str(REPO / "tests"), out=str(tmp_path / "out"), store=str(tmp_path / "s.h5"),
                                probe=PROBE, resume=repr(str(resume)) if resume else None, sleep=sleep)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.mark.timeout(240)
def test_kill_during_training_leaves_the_series_readable_and_resuming_continues_it(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    proc = _train_process(tmp_path, resume=None, sleep=0.4)
    saved = tmp_path / "out" / "checkpoint-4" / "trainer_state.json"  # the Trainer writes it last
    deadline = time.monotonic() + 150
    try:
        # Wait until step 4 is recorded and the Trainer's checkpoint 4 is saved, then kill -9 during step 5 or 6
        # (the Trainer's own checkpoint folders are not written atomically: one killed while saving cannot be
        # resumed from, whatever records attention).
        while time.monotonic() < deadline:
            if saved.exists() and 4 in [c.step for c in series_checkpoints(StoreWriter(store).runs(), "killed")]:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            time.sleep(0.05)
        else:
            pytest.fail("step 4 was never recorded")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    check = verify_store(store)
    assert not check.problems
    killed = series_checkpoints(StoreWriter(store).runs(), "killed")
    assert [c.step for c in killed][:3] == [0, 2, 4]
    with StoreReader(store) as reader:
        for c in killed:
            assert np.isfinite(reader.metrics(c.run, "entropy")).all()
    stamps = {c.run: StoreWriter(store).runs()[c.run].meta["series"]["recorded"] for c in killed}
    resumed = _train_process(tmp_path, resume=saved.parent, sleep=0.0)
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err.decode()[-2000:]
    runs = StoreWriter(store).runs()
    final = series_checkpoints(runs, "killed")
    assert [c.step for c in final] == [0, 2, 4, 6, 8, 10, 12]
    assert len({c.probe_fingerprint for c in final}) == 1
    assert len(runs) == 7 and not verify_store(store).problems
    for run, stamp in stamps.items():  # what was recorded before the kill is kept, not recorded again
        assert runs[run].meta["series"]["recorded"] == stamp
