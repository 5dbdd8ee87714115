"""``sessiondb lease status|acquire|release|list`` and ``sessiondb hook claude-code``."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from ..core.lease import utc_iso
from ..errors import Error
from ..integrations import claude_code as hooks
from ..lease import Holder, Lease, list_leases, workspace


def _state(h: Holder) -> str:
    if h.expired():
        return "stale (past its TTL)"
    alive = h.alive()
    if alive is False:
        return "stale (holder process is gone)"
    if alive is None:
        return f"live (on host {h.host}; until its TTL runs out)"
    return "live"


def _holder_json(h: Holder) -> dict[str, Any]:
    d = h.to_dict()
    d["state"] = _state(h)
    d["stale"] = h.stale()
    return d


def _describe(h: Holder) -> str:
    left = h.expires_at - time.time()
    return (
        f"held by session {h.session_id} (pid {h.pid} on {h.host}) since {utc_iso(h.acquired_at)}; "
        f"{_state(h)}; expires {utc_iso(h.expires_at)} ({max(0, int(left))} s left)"
    )


def _lease(path: str | None, session: str, ttl: float = 300.0, pid: int | None = None) -> Lease:
    root = hooks.workspace_root(path if path is not None else os.getcwd())
    return workspace(root, session, ttl, pid=pid)


path_arg = click.argument("path", required=False, type=click.Path(file_okay=False))
json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group("lease")
def lease_group() -> None:
    """One session at a time on a workspace (default PATH: the current directory's working
    tree). Leases live in $SESSIONDB_RUNTIME_DIR, else $XDG_RUNTIME_DIR/sessiondb."""


@lease_group.command("status")
@path_arg
@json_opt
def status_cmd(path: str | None, as_json: bool) -> None:
    """Who holds the lease on PATH."""
    try:
        lease = _lease(path, "status")
        rec = lease.record
    except Error as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(
            json.dumps({"workspace": lease.resource, "holder": rec and _holder_json(rec)}, indent=2)
        )
    elif rec is None:
        click.echo(f"{lease.kind}: free")
    else:
        click.echo(f"{lease.kind}: {_describe(rec)}")


@lease_group.command("acquire")
@path_arg
@click.option("--session", "session_id", required=True, help="The session taking the lease.")
@click.option("--ttl", default=300.0, show_default=True, help="Seconds until it goes stale.")
@click.option(
    "--pid",
    type=int,
    default=None,
    help="Process whose life the lease follows (default: the calling shell or script).",
)
@json_opt
def acquire_cmd(
    path: str | None, session_id: str, ttl: float, pid: int | None, as_json: bool
) -> None:
    """Take the lease on PATH for SESSION; exit 1 naming the holder when another has it."""
    try:
        # This command exits at once: by default the lease follows its caller, not itself.
        lease = _lease(path, session_id, ttl, os.getppid() if pid is None else pid)
        ok = lease.acquire()
        rec = lease.record
    except Error as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps({"acquired": ok, "holder": rec and _holder_json(rec)}, indent=2))
    elif ok:
        click.echo(f"{lease.kind}: acquired by session {session_id}")
    else:
        click.echo(lease.message, err=True)
    if not ok:
        sys.exit(1)


@lease_group.command("release")
@path_arg
@click.option("--session", "session_id", help="The session giving the lease up.")
@click.option("--force", is_flag=True, help="Break the lease whoever holds it (says whose).")
@json_opt
def release_cmd(path: str | None, session_id: str | None, force: bool, as_json: bool) -> None:
    """Give up SESSION's lease on PATH, or break anyone's with --force."""
    if not force and not session_id:
        raise click.UsageError("name the owner with --session, or break the lease with --force")
    try:
        lease = _lease(path, session_id or "force-release")
        if force:
            broken = lease.force_release()
            released = broken is not None
            rec = broken
        else:
            rec = lease.record
            released = lease.release()
    except Error as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps({"released": released, "holder": rec and _holder_json(rec)}))
    elif force:
        if broken is None:
            click.echo(f"{lease.kind}: free, nothing to break")
        else:
            click.echo(
                f"broke the {lease.kind} of session {broken.session_id} (pid {broken.pid} on "
                f"{broken.host}, {_state(broken)}), held since {utc_iso(broken.acquired_at)}"
            )
    elif released:
        click.echo(f"{lease.kind}: released by session {session_id}")
    else:
        who = "nobody holds it" if rec is None else f"it is {_describe(rec)}"
        click.echo(f"not released: {who}, not by session {session_id}", err=True)
    if not released and not force:
        sys.exit(1)


@lease_group.command("list")
@json_opt
def list_cmd(as_json: bool) -> None:
    """Every workspace lease in the runtime folder, stale ones included."""
    try:
        records = list_leases()
    except Error as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps([_holder_json(r) for r in records], indent=2))
        return
    if not records:
        click.echo("no leases")
    for r in records:
        click.echo(f"{r.resource}: {_describe(r)}")


@click.group("hook")
def hook_group() -> None:
    """Agent hooks that keep one session at a time on a workspace."""


@hook_group.command("claude-code")
@click.option("--ttl", default=hooks.DEFAULT_TTL, show_default=True, help="Lease TTL in seconds.")
def claude_code_cmd(ttl: float) -> None:
    """Claude Code hook: reads the event JSON on stdin. A writing tool (Edit, Write, MultiEdit,
    NotebookEdit, Bash) takes the lease on the event's cwd and is blocked (exit 2, reason on
    stderr) while another live session holds it; Stop and SessionEnd release it. Internal
    errors allow the tool, with a note on stderr."""
    sys.exit(hooks.main(ttl))
