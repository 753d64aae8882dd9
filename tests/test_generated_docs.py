"""Generated documents agree with their sources (docs/build.py): docs/params.md with the field
descriptions of retrieval/params/, and every marked table with the JSON under bench/results/."""
import json
from pathlib import Path

import pytest
import yaml
from pydantic import Field

from bench.provenance import PROVENANCE, read_result
from docs import build, tables
from retrieval.config import Params, Section

ROOT = Path(__file__).resolve().parents[1]


def yaml_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out += [prefix + k] + (yaml_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [])
    return out


def described(model: type[Section] = Params, prefix: str = "") -> dict[str, str | None]:
    out = {}
    for name, info in model.model_fields.items():
        out[prefix + name] = info.description
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section):
            out.update(described(info.annotation, f"{prefix}{name}."))
    return out


def test_every_params_yaml_key_has_a_description():
    keys = yaml_keys(yaml.safe_load((ROOT / "params.yaml").read_text()))
    desc = described()
    missing = [k for k in keys if not desc.get(k)]
    assert not missing, ("params keys without Field(default, description=\"meaning; when to change it\") in "
                         f"retrieval/params/: {', '.join(missing)}")


def test_generated_docs_are_up_to_date():
    stale = build.stale()
    assert not stale, f"stale generated docs: {', '.join(stale)}; run .venv/bin/python docs/build.py"


def test_params_md_lists_every_key_with_its_default():
    text = build.params_md()
    for key, value in json.loads(json.dumps(Params().model_dump())).items():
        if not isinstance(value, dict):
            assert f"| `{key}` | `{build.yaml_value(value)}` |" in text
    assert "| `rerank.diffusion.alpha` | `0.97` |" in text
    assert "| `train.final_image_size` | `null` |" in text


def test_a_key_without_description_is_named():
    class Sub(Section):
        good: int = Field(1, description="described")
        bare: int = 2

    class Top(Section):
        sub: Sub = Field(Sub(), description="a section")

    with pytest.raises(build.MissingDescription, match=r"^tests/test_generated_docs\.py: sub\.bare has no description"):
        build.sections(Top)


def test_tables_are_replaced_between_markers_only():
    text = "before\n<!-- table: t -->\nold\n<!-- /table -->\nmiddle\n<!-- table: t -->\n<!-- /table -->\nafter\n"
    tables.TABLES["t"] = lambda doc_dir: "| new |\n"
    try:
        out = build.fill(text, "x.md")
    finally:
        del tables.TABLES["t"]
    assert out == ("before\n<!-- table: t -->\n| new |\n<!-- /table -->\nmiddle\n"
                   "<!-- table: t -->\n| new |\n<!-- /table -->\nafter\n")
    with pytest.raises(ValueError, match="x.md: unknown table 'nope'"):
        build.fill("<!-- table: nope -->\n<!-- /table -->\n", "x.md")
    with pytest.raises(ValueError, match="x.md: 1 '<!-- table: NAME -->' lines but 0 closed"):
        build.fill("<!-- table: results -->\nno end\n", "x.md")
    with pytest.raises(ValueError, match="x.md: table result:nope.json"):
        build.fill("<!-- table: result:nope.json -->\n<!-- /table -->\n", "x.md")


def test_every_bench_result_records_its_provenance():
    files = sorted((ROOT / "bench/results").rglob("*.json"))
    assert files
    for path in files:
        r = read_result(path)  # refuses a file without them
        assert all(r[k] for k in PROVENANCE), path
        assert r["command"].startswith("python ") and "bench/" in r["command"], path


def test_results_table_rows_come_from_the_files(tmp_path, monkeypatch):
    run = {"test_map": 0.8512, "test_p1": 0.904, "cv_map": 0.936, "cv_ci95": [0.92, 0.95], "wall_s": 1078.2,
           "folds": {"fold0": {"map@1000": 0.93}, "fold1": {"map@1000": 0.94}}, "commit": "abc1234", "command": "python bench/pipeline.py --data grocery",
           "date": "2026-12-07T00:00:00+00:00", "machine": {"cpu": "Xeon", "cores": 2, "gpu": None}}
    (tmp_path / "pipeline_grocery.json").write_text(json.dumps(run))
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    monkeypatch.setattr(tables, "ROOT", tmp_path.parent)
    text = tables.results(tmp_path.parent)
    assert text.count("\n") == 3  # header, rule, one row: caltech and the scale runs have no file here
    assert "| grocery | 0, 1 | 0.851 | 0.904 | 0.936 [0.920, 0.950] | 1,078 s | 2 cores (Xeon), no GPU |" in text
    assert f"[json]({tmp_path.name}/pipeline_grocery.json): `python bench/pipeline.py --data grocery`" in text
    assert "[json](../pipeline_grocery.json)" in tables.results(tmp_path / "docs")  # links from the document's folder


OTHERS = {"provenance.py", "peak.py", "pipeline.py", "serve.py", "extract_runtime.py"}  # not result writers of mine


def test_bench_scripts_write_results_through_save_result():
    for path in sorted((ROOT / "bench").glob("*.py")):
        if path.name in OTHERS or path.name.startswith("gpu"):
            continue
        text = path.read_text()
        if '"--out"' in text:
            assert "save_result(" in text, f"{path.name}: write the result with bench.provenance.save_result"
            assert "write_text(json.dumps(result" not in text and "write_text(json.dumps(out" not in text, path.name


def test_check_mode_fails_on_a_stale_file_and_writing_fixes_it(tmp_path, monkeypatch, capsys):
    target = tmp_path / "params.md"
    target.write_text("# hand-edited\n")
    monkeypatch.setattr(build, "PARAMS_MD", target)
    monkeypatch.setattr(build, "ROOT", tmp_path)
    monkeypatch.setattr(build, "MARKED", ())
    assert build.main(["--check"]) == 1
    assert "stale: params.md" in capsys.readouterr().err
    assert target.read_text() == "# hand-edited\n"  # check mode writes nothing
    assert build.main([]) == 0
    assert target.read_text() == build.params_md()
    assert build.main(["--check"]) == 0


def test_any_script_with_results_has_tables(tmp_path, monkeypatch):
    r = {"searches_per_s": 0.48, "n": 200, "tta": {"flip": True}, "commit": "abc1234", "date": "2026-12-07T00:00:00",
         "command": "python bench/newbench.py --out x.json", "machine": {"cores": 2, "cpu": "Xeon", "gpu": None}}
    (tmp_path / "x.json").write_text(json.dumps(r))
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    monkeypatch.setattr(tables, "ROOT", tmp_path.parent)
    text = tables.render("bench-newbench")
    assert "| searches_per_s | 0.480 |" in text and "| n | 200 |" in text and "tta" not in text.split("\n\n")[1]
    assert "`python bench/newbench.py --out x.json`" in tables.render("bench-newbench-files")
    with pytest.raises(KeyError):
        tables.render("bench-nothing")


def test_keys_off_at_their_defaults_are_listed_apart():
    # what a user sets first; the keys declared with Off() in a table of their own after it
    text = build.params_md()
    train = text[text.index("## train\n"):text.index("## extract\n")]
    off = train.index(build.OFF_ROWS)
    assert train.index("| `train.epochs` |") < off < train.index("| `train.layer_decay` |")
    assert "| `train.neck_lr_scale` |" not in text  # removed: unmeasured, and lr with backbone_lr_scale did its job
    assert f"({build.OFF_SECTION})" in text[text.index("## rerank.kreciprocal\n"):]


def test_a_params_table_takes_the_keys_rows_from_their_one_description():
    text = "<!-- table: params:train.lr,seed -->\nstale\n<!-- /table -->\n"
    out = build.fill(text, "README.md")
    rows = out.splitlines()[3:5]
    assert rows[0].startswith("| `train.lr` | `0.0001` | AdamW base learning rate")
    assert rows[1] == "| `seed` | `42` | " + Params.model_fields["seed"].description + " |"
    with pytest.raises(ValueError, match="README.md: table params:train.lrr: not a params key: train.lrr"):
        build.fill("<!-- table: params:train.lrr -->\n<!-- /table -->\n", "README.md")
