"""A condensation checkpoint resumes only the run that made it: other settings are refused by name."""

from __future__ import annotations

from click.testing import CliRunner

from dsdistill.cli import main
from dsdistill.condenser import Checkpointer


def test_resume_with_other_settings_is_refused_and_same_settings_resume(tiny_name, tmp_path, monkeypatch):
    out = tmp_path / "dm.h5"
    base = ["condense", "-m", "dm", "-d", tiny_name, "--ipc", "1", "-o", str(out), "-q", "--threads", "1",
            "--checkpoint-every", "2"]
    due = Checkpointer.due

    def stop_at_3(self, iteration):  # as SIGINT at iteration 3 would: a final checkpoint, then stop
        self.stop_requested = self.stop_requested or iteration == 3
        return due(self, iteration)

    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "due", stop_at_3)
        interrupted = CliRunner().invoke(main, base + ["--iterations", "6"])
    assert interrupted.exit_code != 0
    assert (tmp_path / "dm.h5.ckpt").exists() and not out.exists()
    refused = CliRunner().invoke(main, base + ["--iterations", "6", "--resume", "--seed", "1", "-p", "lr_img=0.5"])
    assert refused.exit_code == 2, refused.output
    assert "belongs to a different run" in refused.output and "lr_img, seed differ" in refused.output
    assert "Traceback" not in refused.output and not out.exists()
    resumed = CliRunner().invoke(main, base + ["--iterations", "8", "--resume"])  # more iterations: allowed
    assert resumed.exit_code == 0, resumed.output
    assert out.exists() and not (tmp_path / "dm.h5.ckpt").exists()
