"""Figures and tables on disk: the same figure gives the same bytes in every format
(no timestamp, fixed SVG ids), `plot` run twice on the same records rewrites nothing,
and a write that fails leaves the old file and no temporary file behind."""

import errno
import os

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.figure import Figure

from lazydp_bench.errors import BenchError
from lazydp_bench.report.save import save_figure, save_table
from tests.conftest import cli
from tests.report.test_plots import FIXTURE


@pytest.fixture
def figure():
    fig, ax = plt.subplots()
    ax.bar([0, 1], [3.0, 4.0], hatch="//", label="dpsgd-f")
    ax.set_yscale("log")
    ax.legend()
    yield fig
    plt.close(fig)


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_same_figure_same_bytes_at_different_times(figure, tmp_path, monkeypatch, fmt):
    # matplotlib dates a PDF or SVG by SOURCE_DATE_EPOCH when set, else by the clock:
    # two saves a year apart must still agree
    saved = []
    for i, epoch in enumerate(("1700000000", "1731536000")):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        path = tmp_path / f"{i}.{fmt}"
        save_figure(figure, path)
        saved.append(path.read_bytes())
    assert saved[0] == saved[1]
    assert len(saved[0]) > 1000
    if fmt == "pdf":
        assert b"/CreationDate" not in saved[0]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(figure, tmp_path, monkeypatch):
    path = tmp_path / "fig.pdf"
    path.write_bytes(b"old figure")

    def full_disk(self, fname, **kwargs):
        fname.write(b"%PDF-1.4 half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(BenchError, match=r"cannot write .*fig\.pdf: No space left on device"):
        save_figure(figure, path)
    assert path.read_bytes() == b"old figure"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.pdf"]


def test_files_get_the_permissions_of_any_file_the_user_writes(tmp_path):
    mask = os.umask(0o022)
    try:
        save_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "t.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o644


def test_table_is_the_frame_as_csv(tmp_path):
    frame = pd.DataFrame({"algo": ["sgd", "lazydp"], "step_median_ms": [1.5, 2.25]})
    save_table(frame, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == "algo,step_median_ms\nsgd,1.5\nlazydp,2.25\n"
    with pytest.raises(BenchError, match=r"cannot write .*no/t\.csv"):
        save_table(frame, tmp_path / "no" / "t.csv")


def test_plot_twice_rewrites_identical_files(tmp_path, monkeypatch):
    args = ("plot", str(FIXTURE), "--figure", "fig10,fig13a", "--format", "png,pdf,svg")
    saved = []
    for i, epoch in enumerate(("1700000000", "1731536000")):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        res = cli(*args, "--out", str(tmp_path / str(i)))
        assert res.returncode == 0, res.stderr
        saved.append({p.name: p.read_bytes() for p in (tmp_path / str(i)).iterdir()})
    assert sorted(saved[0]) == sorted(
        f"{n}.{ext}" for n in ("fig10", "fig13a") for ext in ("png", "pdf", "svg", "csv")
    )
    assert saved[0] == saved[1]


def test_an_output_path_the_user_cannot_use_is_one_bench_error(tmp_path, monkeypatch):
    from lazydp_bench.files import check_output_file

    (tmp_path / "d").mkdir()
    with pytest.raises(BenchError, match=r"d is a directory; give a file name"):
        check_output_file(tmp_path / "d")
    with pytest.raises(BenchError, match=r"folder .*missing does not exist"):
        check_output_file(tmp_path / "missing" / "f.png")

    def denied(self, *args, **kwargs):  # what Path.is_dir raises under a mode-000 folder
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(tmp_path), "is_dir", denied)
    with pytest.raises(BenchError, match=r"cannot write .*f\.png: Permission denied"):
        check_output_file(tmp_path / "locked" / "f.png")


def test_plot_into_a_folder_where_a_figure_is_a_directory_is_one_line(tmp_path):
    (tmp_path / "fig10.png").mkdir()
    res = cli("plot", str(FIXTURE), "--figure", "fig10", "--out", str(tmp_path))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "fig10.png is a directory" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig10.png"]
