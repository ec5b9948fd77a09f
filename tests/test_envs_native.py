"""eqxrl.envs.native: what Brax's imports print about backends eqxrl never uses stays off the
screen; anything else they print is shown."""

import sys

from eqxrl.envs import native


def test_import_hides_warp_notices_and_keeps_other_output(tmp_path, monkeypatch, capsys):
    (tmp_path / "noisy_dependency.py").write_text(
        "print('Failed to import warp: No module named warp')\n"
        "print('Failed to import mujoco_warp: No module named warp')\n"
        "print('something the user should see')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "noisy_dependency", raising=False)
    module = native._import("noisy_dependency", "brax")
    assert module.__name__ == "noisy_dependency"
    assert capsys.readouterr().out == "something the user should see\n"
