"""``agex demo``: an agent with registered functions solves a small data task, step by step,
printing its events. Offline it uses the scripted LLM; ``--llm openai`` (or any installed
provider) uses a real model, with its key from the environment."""

from __future__ import annotations

import click

SALES = [
    {"region": "north", "month": "2026-01", "amount": 1200.0},
    {"region": "south", "month": "2026-01", "amount": 950.0},
    {"region": "east", "month": "2026-01", "amount": 1430.0},
    {"region": "north", "month": "2026-02", "amount": 1310.0},
    {"region": "south", "month": "2026-02", "amount": 1720.0},
    {"region": "east", "month": "2026-02", "amount": 1380.0},
    {"region": "north", "month": "2026-03", "amount": 1295.0},
    {"region": "south", "month": "2026-03", "amount": 1805.0},
    {"region": "east", "month": "2026-03", "amount": 1410.0},
]

SCRIPT = [
    "First I will load the sales records and look at their shape.\n"
    "```python\nrows = load_sales()\nprint(len(rows), 'rows')\nprint(rows[0])\n```",
    "Now the total per region, largest first.\n"
    "```python\ntotals = {}\nfor row in rows:\n"
    "    totals[row['region']] = totals.get(row['region'], 0) + row['amount']\n"
    "ranked = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)\n"
    "for region, total in ranked:\n    print(f'{region:>6}: {total:9.2f}')\n```",
    "The south leads; I will report it with its growth from the first month to the last.\n"
    "```python\nsouth = [r['amount'] for r in rows if r['region'] == ranked[0][0]]\n"
    "growth = round((south[-1] - south[0]) / south[0] * 100, 1)\n"
    "task_success({'top_region': ranked[0][0], 'total': ranked[0][1], "
    "'growth_percent': growth})\n```",
]


def load_sales() -> list[dict[str, object]]:
    """Monthly sales records: region, month (YYYY-MM) and amount."""
    return [dict(row) for row in SALES]


@click.command()
@click.option(
    "--llm",
    "provider",
    default="scripted",
    show_default=True,
    help="LLM provider: scripted (offline), or an installed one such as openai.",
)
@click.option("--model", default=None, help="Model name for a real provider.")
@click.option("--delay", default=0.3, show_default=True, help="Seconds per scripted reply.")
def demo(provider: str, model: str | None, delay: float) -> None:
    """Watch an agent solve a small data task, step by step."""
    # The agent machinery loads when the demo runs, not when `agex --help` lists it.
    from agex.agent import Agent
    from agex.connect import connect_llm
    from agex.display import pprint_events
    from agex.errors import AgexError

    try:
        if provider == "scripted":
            llm = connect_llm(provider="scripted", responses=SCRIPT, delay=delay, chunk_size=16)
        else:
            llm = connect_llm(provider=provider, model=model)
    except AgexError as exc:
        raise click.ClickException(str(exc)) from exc
    analyst = Agent(name="analyst", primer="You are a careful data analyst.", llm=llm)
    analyst.fn(load_sales)

    @analyst.task
    def top_region() -> dict[str, object]:  # type: ignore[empty-body]
        """Find the region with the highest total sales. Return a dict with top_region,
        total, and growth_percent (its change from the first month to the last, in percent,
        rounded to one decimal)."""

    try:
        result = top_region(on_event=pprint_events)
    except AgexError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"\nResult: {result}")
