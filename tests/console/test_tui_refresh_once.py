"""A poll redraws each screen once. Textual calls a message handler of every class in the screen's MRO, so a
handler that also calls ``super()`` for the same message runs the base's twice: the overview replaced its 10,000
rows twice per poll (half the console's idle CPU with a big broker)."""

from __future__ import annotations

from console.tui.overview import OverviewScreen
from tests.console.tui_fixtures import demo_app


async def test_each_poll_redraws_the_overview_once() -> None:
    app, _broker = demo_app("once")
    async with app.run_test(size=(130, 32)) as pilot:
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, OverviewScreen)
        calls: list[int] = []
        real = screen.refresh_data

        def counted() -> None:
            calls.append(app.polls)
            real()

        screen.refresh_data = counted  # type: ignore[method-assign]
        for _ in range(3):
            polls = app.polls
            app.poll(next(iter(app.states)))
            while app.polls == polls:
                await pilot.pause(0.02)
            await pilot.pause(0.1)
        assert len(calls) == 3, f"{len(calls)} redraws for 3 polls"

