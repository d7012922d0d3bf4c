"""``qdeck brokers``: the configured profiles, optionally checked for reachability."""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table
from rich.text import Text

from console.output import emit_json, stdout_console
from console.runner import cli_errors, fail
from console.safe_text import safe
from probes import ProbeError, Profile, config_path, load_profiles, open_probe, redact_text


async def _check(profile: Profile) -> dict[str, object]:
    probe = open_probe(profile.target)
    try:
        snap = await asyncio.wait_for(probe.snapshot(), 15)
        # Kafka's protocol has no call that reports the broker's version: say so rather than print None
        version = snap.overview.version or "not reported by the broker"
        return {"status": "up", "version": version, "queues": snap.overview.queues, "error": None}
    except ProbeError as exc:
        return {"status": "down", "error": redact_text(str(exc), profile.target.secrets)}
    except TimeoutError:
        return {"status": "down", "error": "no answer within 15 s"}
    finally:
        await probe.aclose()


@cli_errors
def brokers(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    check: bool = typer.Option(False, "--check", "-c", help="Poll each broker and show whether it answers."),
) -> None:
    """List broker profiles from the profile file (URLs shown with passwords masked).

    With --check, exit 2 when any broker is down (after listing them all)."""
    profiles, default = load_profiles()
    path = config_path()
    checks: list[dict[str, object]] = []
    if check and profiles:
        async def run_all() -> list[dict[str, object]]:
            return list(await asyncio.gather(*(_check(p) for p in profiles.values())))
        checks = asyncio.run(run_all())
    rows = []
    for i, p in enumerate(profiles.values()):
        row: dict[str, object] = {"name": p.name, "kind": p.target.kind, "url": p.target.display,
                                  "default": p.name == default, "description": p.description}
        if checks:
            row.update(checks[i])
        rows.append(row)
    down = [str(row["name"]) for row in rows if row.get("status") == "down"]
    if as_json:
        emit_json({"config": str(path), "default": default, "brokers": rows})
    else:
        _print(rows, checks, default, str(path))
    if down:
        raise fail(f"{len(down)} of {len(rows)} brokers down: {', '.join(down)}")


def _print(rows: list[dict[str, object]], checks: list[dict[str, object]], default: str | None, path: str) -> None:
    out = stdout_console()
    if not rows:
        out.print(Text(f"no profiles in {path}; pass --broker URL, or create the file (see README, 'Profiles')",
                       style="dim"))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "KIND", "URL") + (("STATUS", "VERSION / ERROR") if checks else ()):
        table.add_column(col, overflow="fold")
    for row in rows:
        cells: list[Text | str] = [Text(safe(row["name"]) + (" *" if row["default"] else "")), str(row["kind"]),
                                   Text(safe(row["url"]))]
        if checks:
            up = row["status"] == "up"
            cells += [Text(str(row["status"]), style="green" if up else "bold red"),
                      Text(safe(row["version"] if up else row["error"], 300))]
        table.add_row(*cells)
    out.print(table)
    out.print(Text(f"profiles: {path}" + ("  (* default)" if default else ""), style="dim"))
