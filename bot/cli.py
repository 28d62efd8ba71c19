"""The `ackbot` command: serve, check-config, db, rules test."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

import yaml
from pydantic import ValidationError

from bot import logs, serving
from bot.app import build_registry, build_runtime, create_app, freeze_after_startup
from core.config import (
    AckbotConfig,
    ConfigError,
    ConfigProblem,
    EnvSettings,
    config_path_from_env,
    default_config_text,
    load_config,
    problems_from_validation,
)
from core.models.events import EventIn
from core.runtime import Runtime
from core.store import migrate
from core.store.db import Database
from core.url_redaction import redact_urls


def _channel_problems(config: AckbotConfig, text: str | None, file: str) -> list[ConfigProblem]:
    registry = build_registry()
    root = yaml.compose(text, Loader=yaml.SafeLoader) if text else None
    problems = []
    for index, channel in enumerate(config.channels):
        if channel.type not in registry.types():
            known = ", ".join(sorted(registry.types()))
            problems.append(
                ConfigProblem(
                    f"channels[{index}].type", f"unknown channel type {channel.type!r} (known: {known})", None, file
                )
            )
            continue
        try:
            registry.validate_settings(channel.type, channel.settings)
        except ValidationError as exc:
            problems += problems_from_validation(exc, root=root, file=file, prefix=("channels", index, "settings"))
    return problems


def load_checked(path: str | None) -> tuple[AckbotConfig, str]:
    """Load the config and check what the schema alone cannot: channel settings per type."""
    config, source = load_config(path)
    resolved = config_path_from_env(path)
    text = Path(resolved).read_text(encoding="utf-8") if resolved else default_config_text()
    problems = _channel_problems(config, text, source)
    if problems:
        raise ConfigError(problems)
    return config, source


def _config_or_say_why(path: str | None, *, check_channels: bool = False) -> AckbotConfig | None:
    """The config (with channel settings checked when asked), or None after printing its problems."""
    try:
        config, _ = load_checked(path) if check_channels else load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
    return config


def _on_runtime(path: str | None, work: Callable[[Runtime], Awaitable[int]]) -> int:
    """Run work on a started runtime whose dispatcher sends only what work asks for, then stop it; the exit code."""
    logs.configure(EnvSettings().log_level)
    config = _config_or_say_why(path, check_channels=True)
    if config is None:
        return 1

    async def run() -> int:
        runtime = build_runtime(config, run_dispatcher=False)
        await runtime.start()
        try:
            return await work(runtime)
        finally:
            await runtime.stop()

    return asyncio.run(run())


async def _schema_current(db: Database) -> bool:
    revision = await migrate.current_revision(db)
    if revision != migrate.head_revision():
        print(f"the database is at revision {revision}: run `ackbot db upgrade` first", file=sys.stderr)
        return False
    return True


def _on_database(
    path: str | None,
    work: Callable[[AckbotConfig, Database], Awaitable[int]],
    *,
    schema: Literal["as-is", "current", "upgrade"] = "as-is",
) -> int:
    """Run work on the config's database and close it; the exit code.

    schema: "current" refuses a database this code has not migrated, "upgrade" migrates it first.
    """
    config = _config_or_say_why(path)
    if config is None:
        return 1

    async def run() -> int:
        db = Database(config.database.url)
        try:
            if schema == "upgrade":
                await migrate.upgrade(db)
            elif schema == "current" and not await _schema_current(db):
                return 1
            return await work(config, db)
        finally:
            await db.close()

    return asyncio.run(run())


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config, source = load_checked(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"{source}: OK")
    print(
        f"  {len(config.api_keys)} API keys, {len(config.people)} people, {len(config.groups)} groups, "
        f"{len(config.channels)} channels, {len(config.rules)} rules"
    )
    print(
        f"  database: {config.database.url.split('://', 1)[0]}, listening on {config.server.host}:{config.server.port}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    env = EnvSettings()
    logs.configure(env.log_level, env.log_json)
    try:
        config, source = load_checked(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    runtime = build_runtime(config)
    app = create_app(runtime)
    freeze_after_startup(app)  # added last: it runs once everything else has started
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    print(
        f"ackbot: config {source}, database {redact_urls(config.database.url)}, listening on http://{host}:{port}",
        file=sys.stderr,
    )
    asyncio.run(serving.serve(app, host=host, port=port))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    async def show(_config: AckbotConfig, db: Database) -> int:
        print(f"database at revision {await migrate.current_revision(db)} (head {migrate.head_revision()})")
        return 0

    return _on_database(args.config, show, schema="upgrade" if args.action == "upgrade" else "as-is")


def cmd_send_test(args: argparse.Namespace) -> int:
    """Send a real test notification through one channel and report what the receiver said."""
    from core.commands import UnknownChannel, send_test

    async def send(runtime: Runtime) -> int:
        try:
            outcome = await send_test(runtime=runtime, channel=args.channel, requested_by="ackbot send-test")
        except UnknownChannel:
            names = ", ".join(sorted(runtime.channels)) or "none"
            print(f"no channel named {args.channel!r} is in service (channels: {names})", file=sys.stderr)
            return 2
        if outcome.ok:
            print(f"{args.channel}: delivered (delivery {outcome.delivery_id}, status {outcome.status_code})")
            return 0
        print(f"{args.channel}: failed: {outcome.error}", file=sys.stderr)
        return 1

    return _on_runtime(args.config, send)


def cmd_slack_manifest(args: argparse.Namespace) -> int:
    """Print the Slack app manifest filled in for a deployment, to paste into api.slack.com/apps."""
    from bot.slack import manifest

    url = (args.url or "").rstrip("/")
    if not args.socket_mode and not url.startswith("https://"):
        # Slack sends commands and clicks only to https request URLs; Socket Mode needs none.
        print("--url https://... (where Slack reaches ackbot) is required unless --socket-mode", file=sys.stderr)
        return 2
    document = manifest(url=url or "https://unused.invalid", command=args.command, socket_mode=args.socket_mode)
    print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000), end="")
    return 0


def cmd_rules_test(args: argparse.Namespace) -> int:
    """Dry-run an event file against the config's rules, offline: nothing is stored or sent."""
    from core.clock import SystemClock
    from core.planning import build_event
    from core.rules import RuleSet

    config = _config_or_say_why(args.config)
    if config is None:
        return 1
    try:
        data = json.loads(Path(args.event).read_text(encoding="utf-8"))
        incoming = EventIn.model_validate(data)
    except (OSError, ValueError) as exc:
        print(f"{args.event}: {exc}", file=sys.stderr)
        return 1
    event = build_event(incoming, tenant=incoming.tenant or "default", source="dry-run", clock=SystemClock())
    for verdict in RuleSet(config.rules).explain(event):
        mark = "MATCH" if verdict.matched else "no   "
        detail = "" if verdict.matched else f"  ({verdict.check}: {verdict.detail})"
        print(f"{mark} {verdict.rule}{detail}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Send the report now (through the outbox, then at once), or print it (preview)."""
    from core import reports
    from core.channels.base import SendResult

    async def report(runtime: Runtime) -> int:
        config, now = runtime.config, runtime.clock.now()
        if args.report_command == "preview":
            extra = await reports.preview(db=runtime.db, config=config, now=now, public_url=runtime.public_url)
            print(json.dumps(extra["report"], indent=2) if args.json else extra["summary"])
            return 0
        channels = args.channel or list(config.reports.channels)
        unknown = [name for name in channels if name not in runtime.channels]
        if not channels or unknown:
            names = ", ".join(sorted(runtime.channels)) or "none"
            what = f"no channel named {unknown[0]!r}" if unknown else "no channels (reports.channels is empty)"
            print(f"{what}; use --channel NAME (channels: {names})", file=sys.stderr)
            return 2
        ids = await reports.send_now(
            db=runtime.db, config=config, now=now, worker="cli", public_url=runtime.public_url, channels=channels
        )
        assert runtime.dispatcher is not None
        failed = 0
        for channel, delivery_id in zip(channels, ids, strict=True):
            outcome = await runtime.dispatcher.deliver_now(delivery_id=delivery_id)
            if isinstance(outcome, SendResult):
                print(f"{channel}: report delivered (delivery {delivery_id})")
            else:
                failed += 1
                print(f"{channel}: failed: {outcome}", file=sys.stderr)
        return 1 if failed else 0

    return _on_runtime(args.config, report)


def cmd_teams_conversations(args: argparse.Namespace) -> int:
    """List the Teams conversations the bot knows: the names and ids a "teams" channel's settings can use."""
    from core.store import conversations as conversation_store

    async def show(_config: AckbotConfig, db: Database) -> int:
        async with db.read() as session:
            found = await conversation_store.list_conversations(session=session, include_removed=args.all)
        if args.json:
            print(json.dumps([c.model_dump(mode="json", exclude={"reference"}) for c in found], indent=2))
            return 0
        if not found:
            print("No Teams conversations yet: install the ackbot app in a team, group chat or 1:1 chat.")
            return 0
        rows = [("NAME", "KIND", "CONVERSATION ID", "TEAM", "INSTALLED")]
        rows += [
            (c.name, c.kind, c.conversation_id, c.team_name or "", "yes" if c.installed else "removed") for c in found
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
        return 0

    return _on_database(args.config, show, schema="upgrade")


def cmd_teams_package(args: argparse.Namespace) -> int:
    """Write the Teams app package (manifest.json and icons) that admins upload."""
    from bot.teams.package import PackageError, build_manifest, write_package

    try:
        manifest = build_manifest(
            app_id=args.app_id,
            url=args.url,
            name=args.name,
            version=args.version,
            developer=args.developer,
            privacy_url=args.privacy_url,
            terms_url=args.terms_url,
        )
    except PackageError as exc:
        print(f"ackbot teams package: {exc}", file=sys.stderr)
        return 2
    out = write_package(Path(args.out), manifest)
    print(f"wrote {out} (manifest {manifest['manifestVersion']}, bot {manifest['bots'][0]['botId']})")
    print("Upload it in Teams (Apps > Manage your apps > Upload an app) or the Teams admin center.")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Ack-token keys kept in the database: list, rotate (a new key signs), retire (its tokens are refused)."""
    from core.approvals import keys as key_ops
    from core.clock import SystemClock

    async def run(config: AckbotConfig, db: Database) -> int:
        try:
            now = SystemClock().now()
            if args.keys_command == "rotate":
                key = await key_ops.rotate(db=db, config=config, now=now)
                print(f"{key.kid}: a new {key.purpose} key; it signs new tokens, older keys still verify")
            elif args.keys_command == "retire":
                key = await key_ops.retire(db=db, config=config, kid=args.kid, now=now)
                print(f"{key.kid}: retired; the tokens it signed are refused from now on")
            else:
                if config.tokens.keys:
                    print(f"token keys come from the config file (tokens.keys, mode {config.tokens.mode}):")
                    for entry in config.tokens.keys:
                        print(f"  {entry.id}  {'retired' if entry.retired else 'active'}  {entry.secret}")
                stored = await key_ops.list_stored(db=db)
                active = [k for k in stored if k.purpose == config.tokens.mode and not k.retired]
                signing = active[-1].kid if active and not config.tokens.keys else None
                print(f"{'KID':<32} {'PURPOSE':<9} {'CREATED':<26} STATUS")
                for key in stored:
                    status = f"retired {key.retired_at:%Y-%m-%d %H:%M}" if key.retired_at else "active"
                    if key.kid == signing:
                        status += ", signs"
                    print(f"{key.kid:<32} {key.purpose:<9} {key.created_at:%Y-%m-%d %H:%M:%S %Z}  {status}")
            return 0
        except key_ops.KeyOperationError as exc:
            print(exc, file=sys.stderr)
            return 1

    return _on_database(args.config, run, schema="current")


def cmd_callback_secret(args: argparse.Namespace) -> int:
    """Print the secret approval callbacks are signed with, for their receiver to verify X-Ackbot-Signature."""
    from core.approvals import keys as key_ops
    from core.clock import SystemClock

    async def show(config: AckbotConfig, db: Database) -> int:
        secret = await key_ops.callback_secret(db=db, config=config, now=SystemClock().now())
        print(
            "warning: this is the secret that signs approval callbacks; keep it where only their receiver reads it",
            file=sys.stderr,
        )
        print(secret)
        return 0

    return _on_database(args.config, show, schema="current")


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Walk the audit log's hash chain; exit 1 naming the first edited or deleted row."""
    from core.audit import verify_chain

    async def verify(_config: AckbotConfig, db: Database) -> int:
        report = await verify_chain(db=db)
        if not report.ok:
            print(f"audit log BROKEN at row {report.seq}: {report.problem} ({report.rows} rows read)", file=sys.stderr)
            return 1
        print(f"audit log OK: {report.rows} rows, head {report.head_seq} {report.head_hash}")
        return 0

    return _on_database(args.config, verify, schema="current")


# A string: argparse's class is generic only to type checkers.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_command(
    subcommands: Subcommands,
    name: str,
    func: Callable[[argparse.Namespace], int],
    *,
    help: str,
    positionals: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """A sub-command that reads the config file (--config) and runs func; the caller adds its other options."""
    parser = subcommands.add_parser(name, help=help)
    for positional in positionals:
        parser.add_argument(positional)
    parser.add_argument("--config", help="config file (default: ACKBOT_CONFIG, else the embedded default)")
    parser.set_defaults(func=func)
    return parser


def _add_group(subcommands: Subcommands, name: str, *, help: str) -> Subcommands:
    """A command whose sub-commands do the work (`ackbot keys rotate`)."""
    return subcommands.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ackbot", description="ChatOps bot with interactive approvals")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = _add_command(sub, "serve", cmd_serve, help="run the service (API, dispatcher, chat surfaces)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    check = sub.add_parser("check-config", help="validate a config file and list every problem")
    check.add_argument("file", nargs="?", help="config file (default: ACKBOT_CONFIG, else the embedded default)")
    check.set_defaults(func=cmd_check_config)

    db = _add_command(sub, "db", cmd_db, help="database migrations")
    db.add_argument("action", choices=["upgrade", "current"])

    _add_command(
        sub, "send-test", cmd_send_test, help="send a test notification through a channel", positionals=["channel"]
    )

    slack = _add_group(sub, "slack", help="Slack app tools")
    slack_manifest = slack.add_parser("manifest", help="print the Slack app manifest for this deployment")
    slack_manifest.add_argument("--url", help="ackbot's public https URL (Slack posts to URL/slack/events)")
    slack_manifest.add_argument("--command", default="/ackbot", help="the slash command (default /ackbot)")
    slack_manifest.add_argument("--socket-mode", action="store_true", help="Socket Mode: no request URLs")
    slack_manifest.set_defaults(func=cmd_slack_manifest)

    rules = _add_group(sub, "rules", help="rules tools")
    _add_command(
        rules,
        "test",
        cmd_rules_test,
        help="dry-run an event JSON file against the config's rules",
        positionals=["event"],
    )

    report = _add_group(sub, "report", help="the scheduled report (open alerts, approvals, what expires soon)")
    report_send = _add_command(
        report, "send", cmd_report, help="send the report now to reports.channels (or --channel)"
    )
    report_send.add_argument("--channel", action="append", help="a channel to send to (repeatable)")
    report_preview = _add_command(report, "preview", cmd_report, help="print the report without sending it")
    report_preview.add_argument("--json", action="store_true", help="print the JSON a webhook receives")

    teams = _add_group(sub, "teams", help="Microsoft Teams tools")
    conversations = _add_command(
        teams,
        "conversations",
        cmd_teams_conversations,
        help="list the Teams conversations the bot was installed in (targets for teams channels)",
    )
    conversations.add_argument("--all", action="store_true", help="include conversations the bot was removed from")
    conversations.add_argument("--json", action="store_true", help="print JSON")
    package = teams.add_parser("package", help="write the Teams app package (manifest.json and icons) to upload")
    package.add_argument("--app-id", required=True, help="the bot's Microsoft App ID (teams.app_id)")
    package.add_argument("--url", required=True, help="the https:// address Teams reaches ackbot at")
    package.add_argument("--out", default="ackbot-teams.zip", help="the zip to write (default: ackbot-teams.zip)")
    package.add_argument("--name", default="ackbot", help="the app's name in Teams (30 characters at most)")
    package.add_argument("--version", default="1.0.0", help="the app's version; raise it for every re-upload")
    package.add_argument("--developer", default="ackbot", help="the publisher's name shown in Teams")
    package.add_argument("--privacy-url", help="privacy statement (default: --url)")
    package.add_argument("--terms-url", help="terms of use (default: --url)")
    package.set_defaults(func=cmd_teams_package)

    keys = _add_group(sub, "keys", help="ack-token signing keys kept in the database")
    _add_command(keys, "list", cmd_keys, help="list the stored keys (never their material)")
    _add_command(keys, "rotate", cmd_keys, help="add a new key: it signs from now on, older keys still verify")
    _add_command(keys, "retire", cmd_keys, help="retire a key: the tokens it signed are refused", positionals=["kid"])
    _add_command(
        keys, "callback-secret", cmd_callback_secret, help="print the secret approval callbacks are signed with"
    )

    audit = _add_group(sub, "audit", help="the audit log")
    _add_command(audit, "verify", cmd_audit_verify, help="check the hash chain; exit 1 at the first broken row")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ackbot` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
