"""advice: one named remedy, said as a command for the CLI and as a key for the console."""

from __future__ import annotations

import string

import pytest

from opstower_core import advice

# A value for every {name} a remedy template uses.
VALUES = {"db": "shop", "artifact": "shop_20260101_000000.dump", "table": "public.orders", "mode": "merge"}


@pytest.fixture
def face():
    """Restore the process-wide face after a test that changes it."""
    before = advice.current_face()
    yield advice.set_face
    advice.set_face(before)


def test_cli_face_names_the_command(face) -> None:
    face("cli")
    assert advice.say("full_test") == "run `opstower verify latest --full-test`"
    assert advice.say("discard_old", db="shop_old_1") == "`opstower restore --discard-old shop_old_1`"
    assert advice.say("recover_interrupted") == "run `opstower restore --recover`"
    assert advice.say("backup_offsite") == "run `opstower backup` without --local-only"


def test_console_face_names_the_key_and_screen(face) -> None:
    face("console")
    assert advice.say("full_test") == "press t (Full test) on the Dashboard (1)"
    assert advice.say("discard_old", db="shop_old_1").startswith("x (Discard old db) as the console's restore ends")
    assert advice.say("recover_interrupted") == "press R (Recover interrupted restore) on the Dashboard (1)"
    assert "Restore screen" in advice.say("in_place")
    assert advice.say("full_test_of", **VALUES).startswith("select shop_20260101_000000.dump in Backups (2)")


# The engine sentences moved onto advice (issue 16) say exactly what the CLI said before.
CLI_BEFORE = {
    "wait_longer": "--wait-for-locks SECONDS waits longer",
    "backup_format": "use --format custom or plain",
    "replicate_copies": "the next backup or `opstower replicate` copies it",
    "see_backups": "run `opstower list` to see the backups",
    "pick_backup": "pick a backup from `opstower list`",
    "check_key": "check the key with `opstower list`",
    "doctor_aside": "opstower doctor",
    "base_backup_again": "fix the cause and run `opstower base-backup` again",
    "base_backup_take": "take one: opstower base-backup",
    "pitr_status_retake": "run `opstower pitr status` and take another base backup",
    "pitr_status": "check `opstower pitr status`",
    "copy_other_name": "choose another name (--as NAME), or leave it out for a dated one",
    "keep_cluster": "keep the cluster (--keep)",
    "keep_cluster_it": "keep it (--keep)",
    "full_test_use": "use --full-test",
    "no_acl_aside": "--no-acl",
    "from_s3_hint": " (or add --from-s3 to restore the S3 copy, which checked out)",
    "confirm_replace": "run it on a terminal, or pass --force",
    "other_target_db": "choose another --target-db",
}


@pytest.mark.parametrize("name", sorted(CLI_BEFORE))
def test_converted_sentences_keep_their_cli_text(name: str) -> None:
    assert advice.say(name, "cli") == CLI_BEFORE[name]


def test_console_actions_that_were_gaps_name_their_key() -> None:
    """Replicate, base backup, PITR set-up and the kept old databases have keys now: no terminal command."""
    keys = {"replicate": "Y (Replicate)", "replicate_copies": "Y (Replicate)", "base_backup": "B (Base backup)",
            "base_backup_again": "B (Base backup)", "base_backup_take": "B (Base backup)",
            "pitr_status_retake": "(B)", "pitr_enable": "E (Enable PITR)", "list_old": "Kept old databases (K",
            "keep_old": "Kept old databases (K", "discard_old": "Kept old databases (K",
            "other_target_db": "n on the Restore screen", "target_db_name": "n on the Restore screen"}
    for name, key in keys.items():
        text = advice.say(name, "console", **VALUES)
        assert key in text, (name, text)
        assert "opstower" not in text and "terminal" not in text and "console has no" not in text, (name, text)


def test_an_explicit_face_wins_over_the_process_face(face) -> None:
    face("console")
    assert "--full-test" in advice.say("full_test", "cli")


def test_unknown_face_is_refused() -> None:
    with pytest.raises(ValueError):
        advice.set_face("web")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(advice.REMEDIES))
def test_every_remedy_renders_on_both_faces_with_the_same_names(name: str) -> None:
    remedy = advice.REMEDIES[name]
    fields = [{f for _, f, _, _ in string.Formatter().parse(t) if f} for t in (remedy.cli, remedy.console)]
    assert fields[1] <= fields[0], f"{name}: the console text needs a value the CLI sentence does not give"
    for face_name in advice.FACES:
        text = advice.say(name, face_name, **VALUES)
        assert text and "{" not in text


def test_the_console_speaks_in_keys_while_it_is_open(face, tmp_path) -> None:
    """The app sets the console's face while it runs (pilot tests included) and gives the CLI its face back."""
    import asyncio

    from opstower_core.config import Settings, Target
    from opstower_tui.app import OpsTowerApp

    face("cli")
    target = Target(name="shop", dbname="shop", host="127.0.0.1", port=1, user="nobody")
    settings = Settings(backup_dir=tmp_path / "backups", state_dir=tmp_path / "state", targets={"shop": target},
                        default_target="shop", min_free_gb=0.0)
    during: list[str] = []

    async def scenario() -> None:
        async with OpsTowerApp(settings, warm_up=False).run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            during.append(advice.say("full_test"))

    asyncio.run(scenario())
    assert during == ["press t (Full test) on the Dashboard (1)"]
    assert advice.current_face() == "cli"
