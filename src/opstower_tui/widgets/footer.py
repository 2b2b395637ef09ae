"""The screens' key footer: Textual's Footer, rebuilt only when the keys it shows change.

Textual's Footer recomposes on every bindings signal (each focus change, each time its screen
is shown again), and each new compact FooterKey then restyles itself once more when its
`compact` watcher adds the class. With ~10 keys that is most of the CPU of opening a screen
(measured on the command log: 3x fewer Python calls per open without it).
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class KeysFooter(Footer):
    """A Footer (compact by default) that skips recomposing when the shown keys are the same."""

    def __init__(self, *, compact: bool = True, **kwargs: Any) -> None:
        super().__init__(compact=compact, **kwargs)
        self._shown: list[tuple[str, str, str, bool]] | None = None

    def compose(self) -> ComposeResult:
        if self._bindings_ready:
            self._shown = self._keys(self.screen)
        for widget in super().compose():
            if isinstance(widget, FooterKey) and self.compact:
                # Born compact: its watcher then finds the class there and restyles nothing.
                widget.set_class(True, "-compact", update=False)
            yield widget

    def _keys(self, screen: Screen) -> list[tuple[str, str, str, bool]]:
        return [(binding.key, self.app.get_key_display(binding), binding.description, enabled)
                for (_node, binding, enabled, _tooltip) in screen.active_bindings.values() if binding.show]

    def bindings_changed(self, screen: Screen) -> None:
        if (self._shown is not None and screen.app.app_focus and self.is_attached and screen is self.screen
                and self._keys(screen) == self._shown):
            return  # what it shows is still right
        super().bindings_changed(screen)
