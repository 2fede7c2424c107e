"""The decision logs' hash chain (issue 20, items 3 and 4): appends, ``verify_log`` and
``clustermine verify`` on change / removal / insertion, older unchained runs, the signed actor, and
the who-did-what list with its person filter. Runs are format-1 runs written by hand
(``test_rundir.write_format1_run``: 4 images, an unchained edit log of 5 entries by "ann")."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from clustermine.cli import main
from clustermine.core.identity import Actor, local_actor
from clustermine.store import Run, layout
from clustermine.store.chain import append_entries, canonical, genesis, head_path, verify_log
from clustermine.workflows.decisions import decisions, log_state, people
from test_rundir import write_format1_run

ROOT = Path(__file__).resolve().parents[1]


def _lines(p: Path) -> list[bytes]:
    return p.read_bytes().split(b"\n")[:-1]


def _write(p: Path, lines: list[bytes]) -> None:
    p.write_bytes(b"".join(x + b"\n" for x in lines))


def _tamper_second_entry(p: Path, case: str) -> None:
    """Alter entry 2 of the exclusion log at ``p`` (signed by "bo"): ``change`` its signer, ``remove`` it,
    or ``insert`` a copy of entry 3 before it."""
    lines = _lines(p)
    if case == "change":
        lines[1] = lines[1].replace(b'"bo"', b'"al"')
    elif case == "remove":
        del lines[1]
    else:
        lines.insert(1, lines[2])
    _write(p, lines)


@pytest.fixture
def log(tmp_path) -> tuple[Path, str]:
    """A chained log of 6 entries (seq 1..6), written through append_entries."""
    p = tmp_path / "edits.jsonl"
    start = genesis("edits.jsonl", "run-a")
    for i in range(6):
        append_entries(p, [{"seq": i + 1, "user": f"u{i}", "action": "accept", "text": f"c{i}"}], start=start)
    return p, start


# ------------------------------------------------------------------------------------ the chain itself
def test_each_entry_carries_the_hash_of_the_previous_line(log):
    p, start = log
    lines = _lines(p)
    assert start == hashlib.sha256(b"clustermine-decision-log-v1\nedits.jsonl\nrun-a").hexdigest()
    assert json.loads(lines[0])["prev"] == start
    for a, b in zip(lines, lines[1:]):
        assert json.loads(b)["prev"] == hashlib.sha256(a).hexdigest()
    # canonical serialisation: sorted keys, no spaces; the stored bytes are exactly that
    assert all(x == canonical(json.loads(x)) for x in lines)
    assert json.loads(head_path(p).read_text()) == {"count": 6, "sha256": hashlib.sha256(lines[-1]).hexdigest()}
    state = verify_log(p, start=start)
    assert (state.kind, state.count, state.ok, state.bad_entry) == ("intact", 6, True, None)
    assert state.message() == "verified: 6 entries"


def test_another_runs_genesis_does_not_verify(log):
    p, _ = log
    state = verify_log(p, start=genesis("edits.jsonl", "run-b"))
    assert (state.kind, state.bad_entry) == ("altered", 1)
    assert "does not start this run's log" in state.problem


@pytest.mark.parametrize("case, entry, words", [
    ("change", 3, "entry 3 was changed"),
    ("remove", 3, "entry 3 was removed"),
    ("insert", 3, "entry 3 was inserted"),
    ("insert_forged", 3, "entry 3 was inserted"),
    ("change_last", 6, "entry 6 was changed"),
    ("remove_last", 6, "entry 6 was removed"),
    ("remove_first", 1, "entry 1 was removed"),
    ("append", 7, "entry 7 was appended outside ClusterMine"),
    ("not_json", 4, "entry 4 is not a JSON object"),
])
def test_tampering_is_found_at_the_right_entry(log, case, entry, words):
    p, start = log
    lines = _lines(p)
    if case == "change":
        lines[2] = lines[2].replace(b'"user":"u2"', b'"user":"mallory"')
    elif case == "remove":
        del lines[2]
    elif case == "insert":  # a copy of an earlier line
        lines.insert(2, lines[0])
    elif case == "insert_forged":  # a new line that links correctly to the one before it
        forged = dict(json.loads(lines[1]), seq=3, user="mallory", prev=hashlib.sha256(lines[1]).hexdigest())
        lines.insert(2, canonical(forged))
    elif case == "change_last":
        lines[5] = lines[5].replace(b'"accept"', b'"reject"')
    elif case == "remove_last":
        lines.pop()
    elif case == "remove_first":
        lines.pop(0)
    elif case == "append":
        lines.append(canonical(dict(json.loads(lines[5]), seq=7, prev=hashlib.sha256(lines[5]).hexdigest())))
    elif case == "not_json":
        lines[3] = lines[3][:-5]
    _write(p, lines)
    state = verify_log(p, start=start)
    assert (state.kind, state.ok, state.bad_entry) == ("altered", False, entry), state
    assert words in state.problem
    assert state.message().startswith(f"the log was altered at entry {entry}")
    assert state.entry_state(entry) == "not verified" and (entry == 1 or state.entry_state(entry - 1) == "verified")


@pytest.mark.parametrize("log_written", [False, True])
def test_a_crash_between_the_log_and_its_head_still_verifies(log, log_written):
    """The head is two-phase: killed after its first write (log old or new), the log verifies."""
    p, start = log
    old = _lines(p)
    append_entries(p, [{"seq": 7, "user": "u7", "action": "reject", "text": "c7"}], start=start)
    new = _lines(p)
    mid = {"count": 6, "sha256": hashlib.sha256(old[-1]).hexdigest(),
           "next": {"count": 7, "sha256": hashlib.sha256(new[-1]).hexdigest()}}
    head_path(p).write_text(json.dumps(mid))
    _write(p, new if log_written else old)
    state = verify_log(p, start=start)
    assert (state.kind, state.count) == ("intact", 7 if log_written else 6)
    _write(p, new[:5])  # but a truncation is still seen in that state
    assert verify_log(p, start=start).bad_entry == 6


def test_a_chained_log_stripped_of_its_hashes_is_not_taken_for_an_old_one(log):
    p, start = log
    stripped = [json.loads(x) for x in _lines(p)]
    _write(p, [canonical({k: v for k, v in e.items() if k != "prev"}) for e in stripped])
    state = verify_log(p, start=start)
    assert (state.kind, state.bad_entry) == ("altered", 1) and "hashes were removed" in state.problem


def test_a_deleted_log_with_its_head_left_is_altered(log):
    p, start = log
    p.unlink()
    state = verify_log(p, start=start)
    assert (state.kind, state.bad_entry) == ("altered", 1) and "all 6 entries were removed" in state.problem


# ------------------------------------------------------------------------------------ runs, old and new
@pytest.fixture
def old_run(tmp_path) -> Run:
    write_format1_run(tmp_path / "old-run")
    return Run.open(tmp_path / "old-run")


def test_an_old_run_opens_and_is_unchained(old_run, capsys):
    state = log_state(old_run)
    assert (state.kind, state.ok, state.count) == ("unchained", True, 5)
    assert state.message().startswith("unchained: 5 decisions")
    assert [d.state for d in decisions(old_run)] == ["unchained"] * 5
    assert main(["verify", str(old_run.path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("unchained: 5 decisions") and "cannot be verified" in out


def test_new_decisions_chain_after_the_old_ones_and_seal_them(old_run, capsys):
    old_bytes = old_run.file(layout.EDITS).read_bytes()
    old_run.edit_concept("restore", "tench", actor=local_actor("bea"))
    assert old_run.file(layout.EDITS).read_bytes().startswith(old_bytes)  # old lines kept byte for byte
    state = log_state(old_run)
    assert (state.kind, state.edits.kind, state.edits.unchained) == ("verified", "partial", 5)
    assert state.message().startswith("verified: 1 of 6 decisions")
    assert [d.state for d in decisions(old_run)][-1] == "verified"
    # the sealed old lines can no longer change unseen
    p = old_run.file(layout.EDITS)
    p.write_bytes(p.read_bytes().replace(b'"user": "ann"', b'"user": "zed"', 1))
    assert main(["verify", str(old_run.path)]) == 1
    assert "written before the chain" in capsys.readouterr().out


def test_every_new_entry_is_signed_by_the_actor(old_run):
    old_run.edit_concept("reject", "church", actor=Actor("eve@example.org", "oidc", "https://idp.example", "reviewer"))
    old_run.set_excluded([0, 1], actor=local_actor("  bo "))
    old_run.edit_concept("accept", "church", user="carl")  # the older keyword: recorded like the CLI
    e = [json.loads(x) for x in _lines(old_run.file(layout.EDITS))][-2:]
    assert {k: e[0][k] for k in ("user", "auth", "issuer", "role", "action", "seq")} == {
        "user": "eve@example.org", "auth": "oidc", "issuer": "https://idp.example", "role": "reviewer",
        "action": "reject", "seq": 6}
    assert (e[1]["user"], e[1]["auth"]) == ("carl", "os")
    assert all(x["ts"].endswith("+00:00") and len(x["prev"]) == 64 for x in e)
    x = [json.loads(l) for l in _lines(old_run.file(layout.EXCLUSIONS))]
    assert [(r["user"], r["auth"], r["row"], r["seq"]) for r in x] == [("bo", "none", 0, 1), ("bo", "none", 1, 2)]
    assert x[0]["prev"] == genesis(layout.EXCLUSIONS, old_run.run_id)
    assert x[1]["prev"] == hashlib.sha256(_lines(old_run.file(layout.EXCLUSIONS))[0]).hexdigest()
    assert head_path(old_run.file(layout.EXCLUSIONS)).name == layout.EXCLUSIONS_HEAD
    assert head_path(old_run.file(layout.EDITS)).name == layout.EDITS_HEAD
    assert Run.open(old_run.path).excluded_mask().tolist() == [True, True, False, False]


def test_cli_user_records_auth_os_and_verify_counts_both_logs(old_run, capsys, monkeypatch):
    monkeypatch.setenv("USER", "osname")
    assert main(["concepts", str(old_run.path), "--reject", "church", "--user", "dana"]) == 0
    assert main(["exclude", str(old_run.path), "--row", "2"]) == 0
    edit = json.loads(_lines(old_run.file(layout.EDITS))[-1])
    excl = json.loads(_lines(old_run.file(layout.EXCLUSIONS))[-1])
    assert (edit["user"], edit["auth"]) == ("dana", "os") and (excl["user"], excl["auth"]) == ("osname", "os")
    capsys.readouterr()
    assert main(["verify", str(old_run.path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verified: 2 of 7 decisions (edits 6, exclusions 1)")
    assert main(["verify", str(old_run.path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["ok"], got["kind"], got["count"]) == (True, "verified", 7)
    assert got["logs"]["exclusions.jsonl"]["kind"] == "intact"


@pytest.mark.parametrize("case, entry", [("change", 2), ("remove", 2), ("insert", 2)])
def test_cli_verify_exits_1_naming_the_file_and_entry(tmp_path, capsys, case, entry):
    run_dir = tmp_path / "run"
    write_format1_run(run_dir)
    run = Run.open(run_dir)
    run.set_excluded([0, 1, 2, 3], actor=local_actor("bo"))
    _tamper_second_entry(run.file(layout.EXCLUSIONS), case)
    capsys.readouterr()
    assert main(["verify", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"the log was altered at entry {entry} (exclusions.jsonl)")
    assert {"change": "was changed", "remove": "was removed", "insert": "was inserted"}[case] in out
    assert main(["verify", str(run_dir), "--json"]) == 1
    got = json.loads(capsys.readouterr().out)
    assert got["ok"] is False and got["logs"]["exclusions.jsonl"]["bad_entry"] == entry


def test_verify_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "not a ClusterMine run folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ who did what
def test_decisions_list_both_logs_and_filter_by_person(old_run):
    old_run.edit_concept("reject", "church", actor=local_actor("bea"))
    old_run.set_excluded([3], actor=Actor("eve@example.org", "proxy", role="admin"))
    all_ = decisions(old_run)
    assert len(all_) == 7 and people(all_) == ["ann", "bea", "eve@example.org"]
    assert [(d.log, d.entry) for d in all_][-2:] == [("edits", 6), ("exclusions", 1)]  # oldest first
    mine = decisions(old_run, people=["bea", "eve@example.org"])
    assert [(d.user, d.auth, d.role, d.action, d.target, d.state) for d in mine] == [
        ("bea", "none", None, "reject", "church", "verified"),
        ("eve@example.org", "proxy", "admin", "exclude", old_run.image_records(ok_only=True)[3]["path"], "verified")]
    assert decisions(old_run, people=["nobody"]) == []
    assert {d.state for d in all_ if d.user == "ann"} == {"unchained"}


# ------------------------------------------------------------------------------------ the HTML report
def test_report_shows_the_state_and_every_decision_escaped(old_run):
    from clustermine.workflows.report import build_report

    old_run.edit_concept("reject", "church", actor=local_actor("<b>bea</b>"))
    old_run.set_excluded([1], actor=Actor("eve@example.org", "oidc", "https://idp.example", "reviewer"))
    page = build_report(old_run)
    section = page[page.index('<section id="decisions">'):]
    section = section[:section.index("</section>")]
    assert "Decisions log (7)" in section
    assert '<div class="log-verified" id="log-state">verified: 2 of 7 decisions (edits 6, exclusions 1)' in section
    assert section.count('<tr class="decision">') == 7
    assert "&lt;b&gt;bea&lt;/b&gt;" in section and "<b>bea</b>" not in section
    assert "<td>eve@example.org</td><td>oidc</td><td>reviewer</td><td>exclude</td>" in section
    # altered: the report says where
    p = old_run.file(layout.EDITS)
    lines = _lines(p)
    lines[5] = lines[5].replace(b'"reject"', b'"accept"')
    _write(p, lines)
    page = build_report(Run.open(old_run.path))
    assert ('<div class="log-altered" id="log-state">the log was altered at entry 6 (edits.jsonl): entry 6 was '
            "changed") in page


# ------------------------------------------------------------------------------------ the app
def _plain(elements) -> list[str]:
    """The texts of st.info / st.error / … elements, markdown escapes removed."""
    return [re.sub(r"\\(.)", r"\1", e.value) for e in elements]


def _concepts_page(run: Run, monkeypatch, reviewer: str | None = None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CLUSTERMINE_RUNS_ROOT", str(run.path.parent))
    monkeypatch.setenv("CLUSTERMINE_UMAP_WARMUP", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["run"] = run.path.name
    if reviewer:
        at.query_params["reviewer"] = reviewer
    at.run()
    at.switch_page("pages/concepts.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_concepts_page_shows_the_state_and_who_did_what(old_run, monkeypatch):
    at = _concepts_page(old_run, monkeypatch, reviewer="zoe")
    assert any(i.startswith("unchained: 5 decisions") for i in _plain(at.info))
    # a decision from the page is signed by the self-declared name, auth "none", and chained
    at.selectbox(key="concept_pick").set_value(next(c.id for c in old_run.concepts() if c.text == "church")).run()
    at.button(key="btn_reject").click().run()
    last = json.loads(_lines(old_run.file(layout.EDITS))[-1])
    assert (last["user"], last["auth"], last["action"], last["text"]) == ("zoe", "none", "reject", "church")
    assert any(s.startswith("verified: 1 of 6 decisions") for s in _plain(at.success))
    table = at.dataframe[-1].value
    assert list(table.columns[:4]) == ["when", "who", "mode", "role"] and len(table) == 6
    assert (table.iloc[0]["who"], table.iloc[0]["mode"], table.iloc[0]["state"]) == ("zoe", "none", "verified")
    at.multiselect(key="decisions_people").set_value(["ann"]).run()
    assert set(at.dataframe[-1].value["who"]) == {"ann"} and len(at.dataframe[-1].value) == 5


@pytest.mark.parametrize("case, entry", [("change", 2), ("remove", 2), ("insert", 2)])
def test_concepts_page_says_where_the_log_was_altered(tmp_path, monkeypatch, case, entry):
    write_format1_run(tmp_path / "run")
    run = Run.open(tmp_path / "run")
    run.set_excluded([0, 1, 2], actor=local_actor("bo"))
    _tamper_second_entry(run.file(layout.EXCLUSIONS), case)
    at = _concepts_page(run, monkeypatch)
    errors = _plain(at.error)
    assert any(e.startswith(f"the log was altered at entry {entry} (exclusions.jsonl)") for e in errors), errors


def test_an_exclusion_from_the_audit_page_is_signed_by_the_reviewer_of_the_url(old_run, monkeypatch):
    """``?reviewer=`` names the self-declared reviewer on every page, not only where the name box is."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CLUSTERMINE_RUNS_ROOT", str(old_run.path.parent))
    monkeypatch.setenv("CLUSTERMINE_UMAP_WARMUP", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["run"], at.query_params["reviewer"] = old_run.path.name, "kim"
    at.run()
    at.switch_page("pages/audit.py").run()
    pick = at.multiselect(key="excl-pick-0")
    pick.set_value([pick.options[0]]).run()
    at.button(key="excl-go-0").click().run()
    assert not at.exception, [e.value for e in at.exception]
    entry = Run.open(old_run.path).exclusion_log()[-1]
    assert (entry["user"], entry["auth"], entry["action"]) == ("kim", "none", "exclude")
    assert log_state(old_run).exclusions.kind == "intact"


def test_the_sidebar_states_the_log_on_every_page(old_run, monkeypatch):
    old_run.set_excluded([0], actor=local_actor("bo"))
    at = _concepts_page(old_run, monkeypatch)
    assert any("decision log: 1 verified, 5 unchained" in c for c in _plain(at.sidebar.caption))
    p = old_run.file(layout.EDITS)
    lines = _lines(p)
    _write(p, lines[1:])  # an unchained log: removing its first line cannot be seen, only the chained part can
    p = old_run.file(layout.EXCLUSIONS)
    _write(p, [_lines(p)[0].replace(b'"bo"', b'"al"')])
    at.switch_page("pages/runs.py").run()
    assert any("decision log altered at entry 1 (exclusions.jsonl)" in c for c in _plain(at.sidebar.caption))


def test_a_later_append_does_not_hide_a_removed_last_entry(log):
    """Removing the last entry is seen only against the head record: the next append carries the finding."""
    p, start = log
    _write(p, _lines(p)[:5])
    append_entries(p, [{"seq": 6, "user": "u9", "action": "accept", "text": "c9"}], start=start)
    state = verify_log(p, start=start)
    assert (state.kind, state.bad_entry) == ("altered", 6) and "entry 6 was removed" in state.problem
    append_entries(p, [{"seq": 7, "user": "u9", "action": "reject", "text": "c9"}], start=start)
    assert verify_log(p, start=start).bad_entry == 6
