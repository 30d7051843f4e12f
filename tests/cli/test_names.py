"""What ran is named: a refusal says which algorithm it is about, verify refuses what it
cannot check."""

from __future__ import annotations

from tests.conftest import cli


def test_memory_refusal_names_the_algorithm(tmp_path):
    out = tmp_path / "never"
    res = cli(
        "run",
        "--algo",
        "sgd,dpsgd-b",
        "--placement",
        "cpu",
        "--table-size",
        "30TB",
        "--out",
        str(out),
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: sgd: ")  # the first algorithm that does not fit
    assert not out.exists()


def test_verify_refuses_a_non_private_algorithm():
    """`verify --algo sgd` was accepted and then FAILed every check."""
    res = cli("verify", "--algo", "sgd")
    assert res.returncode == 2
    assert "'sgd' is not private" in res.stderr


def test_info_says_none_not_python_none():
    """`info` printed `driver None` on a machine without a GPU."""
    res = cli("info")
    assert res.returncode == 0, res.stderr
    assert "None" not in res.stdout


TINY_CPU = ("--workload", "tiny", "--table-size", "full", "--placement", "cpu")


def test_a_clipping_variant_is_named_in_the_title_and_summary(tmp_path):
    """`run --algo sgd,lazydp --clipping bookkeeping` reads exactly like default LazyDP
    (SGD takes no clipping and is named plainly); SGD alone with a clipping is refused."""
    steps = ("--iterations", "2", "--warmup", "1", "--clipping", "bookkeeping")
    res = cli("run", *TINY_CPU, "--algo", "sgd", *steps, "--out", str(tmp_path))
    assert res.returncode == 2  # sgd takes no clipping: the refusal says so
    assert res.stderr == "error: --clipping applies to private algorithms, not 'sgd'\n"
    res = cli("run", *TINY_CPU, "--algo", "sgd,lazydp", *steps, "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "lazydp [bookkeeping]" in res.stdout
    assert "sgd [" not in res.stdout
