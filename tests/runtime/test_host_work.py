"""Host work deferred past a (hybrid) graph replay: recorded, not run, while recording; run
later in order, reading the CURRENT step's values; a step whose host work is deferred
trains the same model as a plain step. The graph replay itself needs a GPU
(`tests/test_gpu.py` checks hybrid graph == eager there)."""

import pytest
import torch

from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.runtime.host_work import HostWork
from tests.conftest import force_delivery, tiny_session


def test_host_work_runs_at_once_unless_recording():
    host, done = HostWork(), []
    host.run(lambda: done.append("now"))
    assert done == ["now"] and not host.recording
    with host.record():
        assert host.recording
        host.run(lambda: done.append("a"))
        host.run(lambda: done.append("b"))
    assert done == ["now"] and not host.recording
    host.run_recorded()
    host.run_recorded()  # a record is replayed once per graph replay
    assert done == ["now", "a", "b", "a", "b"]


def test_host_work_record_cannot_nest_and_ends_on_error():
    host = HostWork()
    with host.record(), pytest.raises(RuntimeError, match="already recording"), host.record():
        pass
    with pytest.raises(ValueError), host.record():
        raise ValueError("boom")
    assert not host.recording


def test_recorded_host_noise_reads_the_step_it_runs_in():
    """DP-SGD's dense table noise recorded at step 0 and run after step 1's `prepare` draws
    step 1's noise (seed and std), as a graph replay of step 1 needs."""
    recorded, ref = tiny_session("dpsgd-f"), tiny_session("dpsgd-f")
    algo = recorded.algo
    before = recorded.model.table.clone()
    algo.prepare(0)
    table = recorded.model.table
    with algo.ctx.sparse.host.record():
        algo.add_table_noise(
            algo.scalar("noise_alpha", table.device),
            algo.scalar("seed_table", table.device),
            NULL_TIMER,
        )
    assert torch.equal(recorded.model.table, before)  # recorded, not run
    algo.prepare(1)
    algo.ctx.sparse.host.run_recorded()
    ref.algo.prepare(1)
    rt = ref.model.table
    ref.algo.add_noise(
        rt,
        ref.algo.scalar("noise_alpha", rt.device),
        ref.algo.scalar("seed_table", rt.device),
        NULL_TIMER,
    )
    assert not torch.equal(recorded.model.table, before)
    torch.testing.assert_close(recorded.model.table, ref.model.table, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("algo", "delivery", "device_path"),
    [
        ("sgd", None, False),
        ("dpsgd-f", None, False),
        ("eana", None, False),
        ("sgd", None, True),
        ("dpsgd-f", None, True),
        ("eana", None, True),
        ("lazydp", "carried", False),
        ("lazydp", "carried", True),
        ("lazydp-noans", "carried", True),
    ],
)
def test_deferred_host_work_trains_the_same_model(monkeypatch, algo, delivery, device_path):
    """Steps whose host work is recorded and run after the step (a hybrid graph warm-up
    step) leave the table alone until then, and equal plain steps; LazyDP takes hybrid's
    `carried` delivery (noise kept for the next step, merged with its gradient). On the
    device path every algorithm's gradient rows are the carried sort's buffers
    (`sort_ahead`, LazyDP's queue), which the step rewrites before its recorded work
    runs: the recorded update must not read them late."""
    if delivery is not None:
        force_delivery(monkeypatch, delivery)
    if device_path:
        from lazydp_bench.runtime import sparse

        init = sparse.SparseOps.__init__
        forced = lambda self, threads, **kw: init(self, threads, True, **kw)  # noqa: E731
        monkeypatch.setattr(sparse.SparseOps, "__init__", forced)
    plain, deferred = tiny_session(algo, sigma=1.0), tiny_session(algo, sigma=1.0)
    host = deferred.algo.ctx.sparse.host
    for t in range(4):
        plain.step(t, NULL_TIMER)
        batch = deferred.source.advance()
        before = deferred.model.table.clone()
        with host.record():
            deferred.algo.step(t, batch, deferred.source.peek(), NULL_TIMER)
        assert torch.equal(deferred.model.table, before)  # every table write was recorded
        host.run_recorded()
    for s in (plain, deferred):
        s.algo.finalize()
    torch.testing.assert_close(deferred.model.table, plain.model.table, rtol=0, atol=0)
    torch.testing.assert_close(deferred.model.flat_params, plain.model.flat_params, rtol=0, atol=0)
    assert not torch.equal(plain.model.table, tiny_session(algo).model.table)


@pytest.mark.parametrize("pooling", [1, 3])
def test_lookup_into_a_buffer_equals_lookup(pooling):
    session = tiny_session("sgd", pooling=pooling)
    rows = session.source.advance().rows
    want = session.model.lookup(rows)
    out = torch.full_like(want, float("nan"))
    got = session.model.lookup(rows, out=out)
    assert got is out
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.parametrize(("given", "want"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_waits_passively_unless_the_user_says_otherwise(given, want):
    """The command sets OMP_WAIT_POLICY before torch loads OpenMP (spinning OpenMP threads
    take the cores of the host phase's pools); a user's value wins; records say which;
    importing the package alone changes nothing."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = (
        "import os, lazydp_bench; before = os.environ.get('OMP_WAIT_POLICY'); "
        "from lazydp_bench.launch import set_process_defaults; set_process_defaults(); "
        "import torch; from lazydp_bench.measure.env import machine_info; "
        "print(before, os.environ['OMP_WAIT_POLICY'], machine_info()['omp_wait_policy'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(given), want, want]
