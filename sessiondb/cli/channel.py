"""``sessiondb channel send|tail|status FOLDER``: the host end of a channel from the shell."""

from __future__ import annotations

import json
import sys
import time

import click

from ..channel import HostEnd, Reply
from .common import console, emit_json, to_jsonable


def _utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@click.group("channel")
def channel() -> None:
    """Talk to a sandboxed agent through a channel folder (the host end).

    The folder holds inbound.db (host → agent), outbound.db (agent → host) and the agent's
    heartbeat file; see docs/channel.md.
    """


@channel.command("send")
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("content", required=False)
@click.option(
    "--kind",
    type=click.Choice(["message", "command", "event"]),
    default="message",
    show_default=True,
    help="What the agent should make of it.",
)
@click.option("--key", default=None, help="Idempotency key: the same key sends only once.")
@click.option("--json", "as_json", is_flag=True, help="Print the seq as JSON.")
def send_cmd(folder: str, content: str | None, kind: str, key: str | None, as_json: bool) -> None:
    """Send CONTENT (or standard input, less one trailing newline, when omitted or '-') to the
    agent; creates the channel folder when it does not exist yet. Prints the message's seq."""
    if content is None or content == "-":
        text = sys.stdin.read()
        text = text[:-1] if text.endswith("\n") else text
    else:
        text = content
    with HostEnd(folder) as host:
        seq = host.send(text, kind=kind, key=key)
    if as_json:
        emit_json({"seq": seq, "kind": kind, "key": key})
    else:
        console.print(str(seq))


def _print_reply(r: Reply, as_json: bool) -> None:
    if as_json:  # one JSON object per line, so `--follow --json` is a stream
        sys.stdout.write(json.dumps(to_jsonable(r), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    to = f"→{r.in_reply_to}" if r.in_reply_to is not None else ""
    console.print(f"{r.seq}\t{_utc(r.created_at)}\t{r.kind}{to}\t{r.content}", markup=False)


@channel.command("tail")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--after", type=int, default=0, show_default=True, help="Only seqs above this.")
@click.option(
    "--wait",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds to wait for a first reply when there is none yet.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new replies until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def tail_cmd(folder: str, after: int, wait: float, follow: bool, as_json: bool) -> None:
    """Print the agent's replies (outbound messages) in seq order."""
    with HostEnd(folder, create=False) as host:
        cursor = after
        timeout: float | None = wait or None
        try:
            while True:
                for r in host.replies(after=cursor, timeout=timeout):
                    _print_reply(r, as_json)
                    cursor = r.seq
                if not follow:
                    return
                timeout = 1.0
        except KeyboardInterrupt:
            return


@channel.command("status")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--stale-after",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds (on this host's clock) the heartbeat may stand unchanged before the agent "
    "counts as dead.",
)
@click.option("--sweep", is_flag=True, help="Also re-offer or fail messages of a dead agent.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_cmd(folder: str, stale_after: float, sweep: bool, as_json: bool) -> None:
    """Is the agent alive, how old is its heartbeat, which messages are processing or failed."""
    with HostEnd(folder, create=False, stale_after=stale_after) as host:
        report = host.sweep() if sweep else None
        st = host.status()
    if as_json:
        emit_json({"status": st, "sweep": report} if sweep else st)
        return
    age = "none" if st.heartbeat_age is None else f"unchanged for {st.heartbeat_age:.1f}s"
    console.print(f"agent: {'alive' if st.alive else 'NOT alive'} (heartbeat {age})", markup=False)
    if st.run_id is not None:
        console.print(f"run: {st.run_id} (pid {st.pid})", markup=False)
    console.print(
        f"pending: {st.pending}  processing: {len(st.processing)}  "
        f"completed: {st.completed}  failed: {len(st.failed)}",
        markup=False,
    )
    if st.processing:
        console.print("processing seqs: " + " ".join(map(str, st.processing)), markup=False)
    if st.failed:
        console.print("failed seqs: " + " ".join(map(str, st.failed)), markup=False)
    if report is not None:
        console.print(
            f"sweep: re-offered {list(report.reoffered)}, failed {list(report.failed)}, "
            f"settled {report.settled}",
            markup=False,
        )
