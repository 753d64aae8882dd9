"""The service's command (stages/serve.py): a bad bundle or flag is one line, no traceback."""
from __future__ import annotations

import pytest

from stages.serve import main


def test_a_missing_bundle_is_one_line_naming_it(tmp_path, capsys):
    assert main(["--bundle", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path / "nowhere") in err and err.count("\n") == 1


def test_a_tampered_bundle_is_refused_naming_the_file(bundle_copy, capsys):
    (bundle_copy / "settings.json").write_text("{}")
    assert main(["--bundle", str(bundle_copy)]) == 2
    assert "settings.json" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--port", "70000"], ["--max-upload-mb", "0"], ["--concurrent-searches", "0"]])
def test_bad_flags_are_refused(tmp_path, flags, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--bundle", str(tmp_path), *flags])
    assert exit_.value.code == 2 and flags[0] in capsys.readouterr().err
