"""Submission file: validation, write/read round trip, truth files, scoring and the score CLI."""
import json

import pytest

from retrieval.io import InputError
from retrieval.metrics import MAP_K
from retrieval.results.per_query import AP, COLUMNS, LABEL, P1, QUERY_ID, read_per_query
from retrieval.results.submission import HEADER, SubmissionError, read_submission, read_truth, score_submission, validate, write_submission
from stages import score

QUERIES = ["q1", "q2", "q3"]
REFS = ["r1", "r2", "r3", "r4", "r5"]
RANKINGS = {"q1": ["r1", "r2", "r3"], "q2": ["r4"], "q3": []}


def write_truth(directory, queries, refs):
    directory.mkdir(exist_ok=True)
    (directory / "query.csv").write_text("id,label\n" + "".join(f"{i},{l}\n" for i, l in queries))
    (directory / "reference.csv").write_text("id,label\n" + "".join(f"{i},{l}\n" for i, l in refs))
    return directory


# truth for the golden score: references r1:a r2:b r3:a r4:c r5:a; queries q1:a q2:b q3:d
TRUTH_QUERIES = [("q1", "a"), ("q2", "b"), ("q3", "d")]
TRUTH_REFS = [("r1", "a"), ("r2", "b"), ("r3", "a"), ("r4", "c"), ("r5", "a")]
# q1: ranked r1 r2 r3 -> a at ranks 1, 3 of n_rel 3 -> (1 + 2/3) / 3 = 5/9
# q2: ranked r4       -> b never retrieved            -> 0
# q3: label d has no reference                        -> 0
GOLDEN_MAP = (5 / 9 + 0 + 0) / 3
GOLDEN_P1 = 1 / 3


def test_round_trip(tmp_path):
    path = tmp_path / "out" / "submission.csv"
    write_submission(path, RANKINGS, ["q3", "q1", "q2"], REFS)
    lines = path.read_text().splitlines()
    assert lines == ["query_id,reference_ids", "q3,", "q1,r1 r2 r3", "q2,r4"]
    back = read_submission(path)
    assert back == RANKINGS and list(back) == ["q3", "q1", "q2"]
    assert HEADER == ("query_id", "reference_ids")


@pytest.mark.parametrize("rankings,fragments", [
    ({"q1": ["r1"], "q2": []}, ["query 'q3' is missing"]),
    ({**RANKINGS, "qX": []}, ["unknown query 'qX'"]),
    ({**RANKINGS, "q2": ["r5", "r1", "r5"]}, ["query 'q2'", "reference 'r5' appears 2 times"]),
    ({**RANKINGS, "q1": ["r1", "rZ"]}, ["query 'q1'", "unknown reference 'rZ'"]),
    ({**RANKINGS, "q2": [f"x{i}" for i in range(1001)]}, ["query 'q2'", "1001", "limit of 1000"]),
])
def test_validate_refusals_name_query_and_fault(tmp_path, rankings, fragments):
    refs = REFS + [f"x{i}" for i in range(1001)]
    with pytest.raises(SubmissionError) as err:
        validate(rankings, QUERIES, refs)
    for fragment in fragments:
        assert fragment in str(err.value)
    path = tmp_path / "submission.csv"
    with pytest.raises(SubmissionError):
        write_submission(path, rankings, QUERIES, refs)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left behind


def test_validate_reports_first_fault_in_sorted_order_and_the_count():
    rankings = {"q3": ["rZ"], "q1": ["r1", "r1"]}  # q1 repeated ref, q2 missing, q3 unknown ref
    with pytest.raises(SubmissionError, match=r"^query 'q1': reference 'r1' appears 2 times \(3 queries"):
        validate(rankings, QUERIES, REFS)
    assert issubclass(SubmissionError, InputError)
    validate(RANKINGS, QUERIES, REFS)  # a valid one passes


def test_id_with_space_or_comma_is_refused(tmp_path):
    path = tmp_path / "submission.csv"
    refs = REFS + ["my photo.jpg", "a,b"]
    for bad in ("my photo.jpg", "a,b"):
        with pytest.raises(SubmissionError, match=rf"query 'q1'.*{bad!r}"):
            write_submission(path, {**RANKINGS, "q1": [bad]}, QUERIES, refs)
    with pytest.raises(SubmissionError, match="query id 'q 4'"):
        write_submission(path, {"q 4": []}, ["q 4"], REFS)
    assert not path.exists()


def test_refused_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "submission.csv"
    write_submission(path, RANKINGS, QUERIES, REFS)
    before = path.read_text()
    with pytest.raises(SubmissionError):
        write_submission(path, {"q1": []}, QUERIES, REFS)
    assert path.read_text() == before


@pytest.mark.parametrize("text,fragments", [
    ("query,refs\nq1,r1\n", ["row 1", "header"]),
    ("query_id,reference_ids\nq1,r1\nq2,r2\nq3,\nq1,r3\n", ["query 'q1' appears in rows 2 and 5"]),
    ("query_id,reference_ids\nq1,r1,r2\n", ["row 2", "2 fields"]),
    ("", ["header"]),
])
def test_read_submission_refusals_name_file_and_row(tmp_path, text, fragments):
    path = tmp_path / "sub.csv"
    path.write_text(text)
    with pytest.raises(SubmissionError) as err:
        read_submission(path)
    for fragment in [str(path), *fragments]:
        assert fragment in str(err.value)


def test_read_submission_missing_file(tmp_path):
    with pytest.raises(SubmissionError, match="nope.csv: no such file"):
        read_submission(tmp_path / "nope.csv")


def test_read_truth_and_its_refusals(tmp_path):
    truth = write_truth(tmp_path / "truth", TRUTH_QUERIES, TRUTH_REFS + [("r6", "NA")])
    queries, refs = read_truth(truth)
    assert queries == dict(TRUTH_QUERIES) and refs["r6"] == "NA"  # read verbatim, not as missing
    with pytest.raises(InputError, match="query.csv: no such file"):
        read_truth(tmp_path)
    write_truth(tmp_path / "dup", TRUTH_QUERIES + [("q1", "b")], TRUTH_REFS)
    with pytest.raises(InputError, match="query.csv: id 'q1' appears 2 times"):
        read_truth(tmp_path / "dup")
    bad = write_truth(tmp_path / "cols", TRUTH_QUERIES, TRUTH_REFS)
    (bad / "reference.csv").write_text("image,class\nr1,a\n")
    with pytest.raises(InputError, match="reference.csv: needs columns id,label"):
        read_truth(bad)


def test_score_submission_golden_and_truth_checks():
    queries, refs = dict(TRUTH_QUERIES), dict(TRUTH_REFS)
    m = score_submission(RANKINGS, queries, refs, MAP_K)
    assert m == pytest.approx({"map@1000": GOLDEN_MAP, "p@1": GOLDEN_P1, "n_queries": 3})
    # k=1 keeps one rank: q1 -> 1 / min(3, 1) = 1; others 0
    assert score_submission(RANKINGS, queries, refs, k=1)["map@1"] == pytest.approx(1 / 3)
    with pytest.raises(SubmissionError, match="query 'q3' is missing"):
        score_submission({"q1": [], "q2": []}, queries, refs, MAP_K)
    with pytest.raises(SubmissionError, match="unknown reference 'r9'"):
        score_submission({**RANKINGS, "q2": ["r9"]}, queries, refs, MAP_K)


def scored_files(tmp_path) -> list[str]:
    """The score command's arguments for the truth and a submission of RANKINGS, written under ``tmp_path``."""
    truth = write_truth(tmp_path / "truth", TRUTH_QUERIES, TRUTH_REFS)
    sub = tmp_path / "submission.csv"
    write_submission(sub, RANKINGS, QUERIES, REFS)
    return ["--submission", str(sub), "--truth", str(truth)]


def test_score_cli_prints_json(tmp_path, capsys):
    assert score.main(scored_files(tmp_path)) == 0
    out = capsys.readouterr().out
    result = json.loads(out)
    assert result == pytest.approx({"map@1000": GOLDEN_MAP, "p@1": GOLDEN_P1, "n_queries": 3})
    assert out.strip().splitlines() == [json.dumps(result, sort_keys=True)]


def test_score_cli_per_query_file(tmp_path, capsys):
    files = scored_files(tmp_path)
    assert score.main(files) == 0
    plain = capsys.readouterr().out
    per_query = tmp_path / "out" / "test_ap.csv"
    assert score.main([*files, "--per-query", str(per_query)]) == 0
    assert capsys.readouterr().out == plain  # stdout unchanged by the flag
    table = read_per_query(per_query, COLUMNS)
    assert table[QUERY_ID].tolist() == ["q1", "q2", "q3"] and table[LABEL].tolist() == ["a", "b", "d"]
    assert table[AP].tolist() == pytest.approx([5 / 9, 0, 0]) and table[P1].tolist() == [1, 0, 0]
    assert table[AP].mean() == json.loads(plain)["map@1000"] and table[P1].mean() == GOLDEN_P1


def test_score_cli_invalid_submission_is_one_error_line(tmp_path, capsys):
    truth = write_truth(tmp_path / "truth", TRUTH_QUERIES, TRUTH_REFS)
    sub = tmp_path / "submission.csv"
    sub.write_text("query_id,reference_ids\nq1,r1 r1\nq2,\nq3,\n")
    assert score.main(["--submission", str(sub), "--truth", str(truth)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "query 'q1'" in lines[0]
    assert score.main(["--submission", str(tmp_path / "none.csv"), "--truth", str(truth)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_score_cli_comma_joined_references_say_the_separator_in_a_short_line(tmp_path, capsys):
    # a quoted field of 1,000 comma-joined ids printed one 5,000-character line, until now
    refs = [(f"r{i}", "a") for i in range(1000)]
    truth = write_truth(tmp_path / "truth", [("q1", "a")], refs)
    sub = tmp_path / "submission.csv"
    sub.write_text('query_id,reference_ids\nq1,"' + ",".join(i for i, _ in refs) + '"\n')
    assert score.main(["--submission", str(sub), "--truth", str(truth)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {sub}: row 2: reference ids are separated by spaces, not commas: 'r0,r1,")
    assert err.endswith("... (4889 characters)\n") and len(err) < 200 + len(str(sub))


def test_single_quotes_in_ids_round_trip_double_quotes_are_refused(tmp_path):
    # the CSV reader treats only double quotes specially: an id with an apostrophe is fine
    path = tmp_path / "submission.csv"
    refs = REFS + ["l'œuf", "it's"]
    write_submission(path, {**RANKINGS, "q1": ["l'œuf", "r1"], "it's": []}, [*QUERIES, "it's"], refs)
    assert read_submission(path)["q1"] == ["l'œuf", "r1"] and read_submission(path)["it's"] == []
    with pytest.raises(SubmissionError, match="contains a space, comma, double quote or other separator"):
        write_submission(path, {**RANKINGS, "q1": ['say"cheese']}, QUERIES, REFS + ['say"cheese'])
