"""Issue 20 (2): roles viewer < reviewer < admin from a TOML roles file, checked by every write entry
point of the engine before anything is written (the run folder is byte-for-byte unchanged after a
refusal), and applied to the CLI's OS user."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from clustermine import cli
from clustermine.core.config import MineConfig
from clustermine.core.errors import ClusterMineError
from clustermine.core.identity import Actor
from clustermine.core.roles import (ACTIONS, ROLES, PermissionDenied, RolesPolicy, allowed, clustermine_settings,
                                    configured_roles, load_roles, parse_roles, require, roles_file_setting, why_not)
from clustermine.store import Run
from clustermine.store.concepts import set_concept_status
from clustermine.workflows import jobs, pipeline, remine, run_admin, stability
from clustermine.workflows.new_run import RunSource, create_run_from_uploads

GOOD = """\
default = "viewer"

[users]
"Ann@Example.org" = "admin"
bob = "reviewer"
"@example.org" = "reviewer"
"@blocked.example" = "none"
"""


# ------------------------------------------------------------------------------------ the roles file
def test_roles_file_maps_names_then_domains_then_the_default():
    pol = parse_roles(GOOD, "roles.toml")
    assert pol.role_for("ann@example.org") == "admin"  # exact entry, case-insensitive, wins over its domain
    assert pol.role_for("  BOB ") == "reviewer"
    assert pol.role_for("carol@example.org") == "reviewer"  # the domain
    assert pol.role_for("carol@sub.example.org") == "viewer"  # a subdomain is another domain
    assert pol.role_for("eve@blocked.example") == "none"
    assert pol.role_for("dave") == "viewer" and pol.role_for("") == "viewer"
    assert parse_roles("[users]\nx = 'admin'\n").default == "viewer"  # a file without default: viewer
    assert parse_roles('default = "Reviewer"\n').role_for("z") == "reviewer"
    got = pol.with_role(Actor("carol@example.org", auth="oidc", issuer="https://idp"))
    assert got == Actor("carol@example.org", auth="oidc", issuer="https://idp", role="reviewer")


@pytest.mark.parametrize("text, needles", [
    ('default = "viewer"\n[users\nbob = "admin"\n', ["roles.toml", "not valid TOML", "line 2"]),
    ('default = "viewer"\n\n[users]\nbob = "boss"\n', ["roles.toml, line 4", "'bob'", "'boss'", "viewer, reviewer"]),
    ('default = "god"\n', ["roles.toml, line 1", "default", "'god'"]),
    ('[users]\n"ann@x.org" = 3\n', ["roles.toml, line 2", "ann@x.org", "3"]),
    ('default = "viewer"\nadmins = ["ann"]\n', ["roles.toml, line 2", "unknown key 'admins'", "[users]"]),
    ('users = "ann"\n', ["roles.toml, line 1", "must be a table"]),
    ('[users]\n"@" = "admin"\n', ["roles.toml, line 2", "empty name"]),
])
def test_a_bad_roles_file_is_named_with_its_line_and_key(text, needles):
    with pytest.raises(ClusterMineError) as err:
        parse_roles(text, "roles.toml")
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_roles_file_location_from_the_environment_or_secrets(tmp_path, monkeypatch):
    f = tmp_path / "roles.toml"
    f.write_text(GOOD, encoding="utf-8")
    assert roles_file_setting({}, {}) is None and configured_roles({}, {}) is None  # nothing configured
    assert roles_file_setting({}, {"roles_file": str(f)}) == f
    assert roles_file_setting({"CLUSTERMINE_ROLES": str(f)}, {"roles_file": "/elsewhere.toml"}) == f  # env wins
    assert configured_roles({"CLUSTERMINE_ROLES": str(f)}).role_for("bob") == "reviewer"
    assert load_roles(f).source == str(f)
    with pytest.raises(ClusterMineError, match=r"missing\.toml: the roles file cannot be read"):
        configured_roles({"CLUSTERMINE_ROLES": str(tmp_path / "missing.toml")})
    # the CLI reads [clustermine] from the project's .streamlit/secrets.toml, the app's own settings file
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".streamlit").mkdir()
    secrets = tmp_path / ".streamlit" / "secrets.toml"
    secrets.write_text(f'[clustermine]\nroles_file = "{f}"\n', encoding="utf-8")
    assert clustermine_settings() == {"roles_file": str(f)}
    secrets.write_text("[clustermine\n", encoding="utf-8")
    with pytest.raises(ClusterMineError, match="secrets.toml: not valid TOML"):
        clustermine_settings()


# ------------------------------------------------------------------------------------ require()
def test_require_matrix_follows_the_role_order():
    for role, action in itertools.product(ROLES, ACTIONS):
        ok = ROLES.index(role) >= ROLES.index(ACTIONS[action])
        assert allowed(role, action) is ok
        actor = Actor("pat@example.org", auth="oidc", role=role)
        if ok:
            require(actor, action)
            assert why_not(role, action) is None
        else:
            with pytest.raises(PermissionDenied) as err:
                require(actor, action)
            msg = str(err.value)
            assert "pat@example.org" in msg and repr(role) in msg and repr(action) in msg
            assert repr(ACTIONS[action]) in msg and "nothing was changed" in msg
            assert isinstance(err.value, ClusterMineError) and err.value.needed == ACTIONS[action]
            assert ACTIONS[action] in why_not(role, action)
    # the table: viewer browses, searches, scores, exports; reviewer decides; admin launches
    assert {a for a in ACTIONS if allowed("viewer", a)} == {"browse", "search", "score", "export"}
    assert {a for a in ACTIONS if allowed("reviewer", a)} - {a for a in ACTIONS if allowed("viewer", a)} == {
        "edit_concepts", "exclude", "remine", "stability"}
    assert {a for a in ACTIONS if not allowed("reviewer", a)} == {"launch", "label", "delete"}
    # no roles configured (role None) and library calls without an actor may do everything
    for action in ACTIONS:
        require(None, action)
        require(Actor("x", auth="none"), action)
    with pytest.raises(ValueError, match="unknown action"):
        allowed("admin", "fly")


# ------------------------------------------------------------------------------------ enforcement
def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> SHA-256 of its bytes ('dir' for folders)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


VIEWER = Actor("vic@example.org", auth="oidc", issuer="https://idp.example", role="viewer")
REVIEWER = Actor("rita@example.org", auth="oidc", issuer="https://idp.example", role="reviewer")
ADMIN = Actor("ada@example.org", auth="proxy", role="admin")


def write_actions(run_dir: Path, images: Path) -> dict:
    """Every write entry point of the engine, called on ``run_dir`` (a finished run) as ``actor``."""
    out = run_dir.parent / "new-run"
    return {
        "edit_concepts": lambda a: Run.open(run_dir).edit_concept("reject", Run.open(run_dir).concepts()[0].id, actor=a),
        "edit_concepts (add)": lambda a: Run.open(run_dir).edit_concept("add", "tench", actor=a),
        "edit_concepts (status)": lambda a: set_concept_status(Run.open(run_dir), Run.open(run_dir).concepts()[0].id,
                                                               "accepted", actor=a),
        "exclude": lambda a: Run.open(run_dir).set_excluded([0, 1], actor=a),
        "remine": lambda a: remine.remine(Run.open(run_dir), actor=a),
        "stability": lambda a: stability.seed_stability(Run.open(run_dir), 2, actor=a),
        "label": lambda a: run_admin.set_label(run_dir, "mine now", actor=a),
        "delete": lambda a: run_admin.delete_run(run_dir, actor=a),
        "launch (job)": lambda a: jobs.start_mine_job(run_dir, actor=a),
        "launch (upload)": lambda a: create_run_from_uploads(out, MineConfig(n_clusters=2, clusterer="kmeans"),
                                                             RunSource("folder", folder=str(images)), actor=a),
        "launch (mine)": lambda a: pipeline.mine(images, out, MineConfig(n_clusters=2, clusterer="kmeans"), actor=a),
        "launch (features)": lambda a: pipeline.mine_features(run_dir / "features.npy", None, out, actor=a),
        "launch (resume)": lambda a: pipeline.resume(run_dir, actor=a),
    }


def test_every_write_action_is_refused_for_a_role_without_it_and_nothing_is_written(small_run, small_images):
    root = small_run.parent
    before = snapshot(root)
    for name, call in write_actions(small_run, small_images).items():
        action = name.split(" ")[0]
        actors = [a for a in (VIEWER, REVIEWER) if not allowed(a.role, action)]
        assert actors, name  # every write action is refused to the viewer at least
        for actor in actors:
            with pytest.raises(PermissionDenied) as err:
                call(actor)
            assert actor.name in str(err.value) and repr(action) in str(err.value), name
            assert snapshot(root) == before, f"{name} as {actor.role} wrote something"


def test_roles_that_have_the_right_act_and_are_recorded(small_run):
    run = Run.open(small_run)
    victim = run.concepts()[0]
    run.edit_concept("reject", victim.id, actor=REVIEWER)
    assert Run.open(small_run).edits()[-1]["user"] == REVIEWER.name
    assert Run.open(small_run).set_excluded([0], actor=REVIEWER) == [0]
    assert Run.open(small_run).exclusion_log()[-1]["user"] == REVIEWER.name
    assert remine.remine(Run.open(small_run), actor=REVIEWER)["user"] == REVIEWER.name
    assert run_admin.set_label(small_run, "ok", actor=ADMIN) == "ok"
    run_admin.delete_run(small_run, actor=ADMIN)
    assert not small_run.exists()


# ------------------------------------------------------------------------------------ the CLI
def test_cli_applies_the_roles_file_to_the_os_user(small_run, tmp_path, monkeypatch, capsys):
    roles = tmp_path / "roles.toml"
    roles.write_text('default = "viewer"\n[users]\nrita = "reviewer"\nada = "admin"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    monkeypatch.setenv("CLUSTERMINE_ROLES", str(roles))
    monkeypatch.setenv("USER", "vic")
    concept = Run.open(small_run).concepts()[0]
    before = snapshot(small_run.parent)
    # --user names who is recorded; it does not lend that user's role (the OS vouches for vic only)
    for argv in (["concepts", str(small_run), "--reject", concept.id, "--user", "ada"],
                 ["exclude", str(small_run), "--row", "0"], ["remine", str(small_run)],
                 ["stability", str(small_run), "--seeds", "2"], ["label", str(small_run), "x"],
                 ["delete", str(small_run), "--yes"]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "has the role 'viewer'" in err and "nothing was changed" in err, argv
    assert snapshot(small_run.parent) == before
    assert cli.main(["concepts", str(small_run)]) == 0  # listing is a viewer's right
    monkeypatch.setenv("USER", "rita")
    assert cli.main(["concepts", str(small_run), "--reject", concept.id]) == 0
    edit = Run.open(small_run).edits()[-1]
    assert edit["user"] == "rita" and edit["action"] == "reject"
    assert cli.main(["label", str(small_run), "x"]) == 2 and "needs the role 'admin'" in capsys.readouterr().err
    roles.write_text('default = "wizard"\n', encoding="utf-8")
    assert cli.main(["label", str(small_run), "x"]) == 2
    assert f"{roles}, line 1" in capsys.readouterr().err


def test_cli_without_a_roles_file_lets_the_os_user_do_everything(small_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLUSTERMINE_ROLES", raising=False)
    monkeypatch.setenv("USER", "solo")
    assert cli.main(["label", str(small_run), "mine"]) == 0
    assert cli.main(["concepts", str(small_run), "--reject", Run.open(small_run).concepts()[0].id]) == 0
    assert Run.open(small_run).edits()[-1]["user"] == "solo"
    assert RolesPolicy().role_for("anyone") == "viewer"  # the default a roles file gets when it names none
