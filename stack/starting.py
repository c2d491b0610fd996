"""Launch components and wait for their health, remembering what started so a failure can undo it."""

from __future__ import annotations

import time

from . import procs
from .components import Component
from .layout import Layout

Started = tuple[Component, procs.Running]


class Starter:
    """What `up` has launched so far, in order, and how long it has been going."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.started: list[Started] = []
        self.healthy: set[str] = set()
        self.began = time.monotonic()

    def launch(self, component: Component) -> Started:
        print(f"starting {component.name} (log: {component.log})", flush=True)
        running = procs.start(
            self.layout, component.name, component.command, component.log, component.env, component.cwd
        )
        self.started.append((component, running))
        return component, running

    def wait(self, launched: Started) -> None:
        component, running = launched
        procs.wait_healthy(running, component.probe, component.timeout)
        self.healthy.add(component.name)
        print(f"  {component.name} healthy at {self.elapsed():.1f} s ({component.probe})", flush=True)

    def wait_all(self) -> None:
        """Wait for everything launched so far and not yet healthy (components booting side by side)."""
        for launched in self.started:
            if launched[0].name not in self.healthy:
                self.wait(launched)

    def start(self, component: Component) -> None:
        self.wait(self.launch(component))

    def stop_all(self) -> None:
        for component, _ in reversed(self.started):
            procs.stop(self.layout, component.name)

    def elapsed(self) -> float:
        return time.monotonic() - self.began
