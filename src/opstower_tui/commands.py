"""The command palette (ctrl+p) offers every action of the current screen and the app.

Built from the live bindings, so it always matches the footer and the keymap, and in
read-only mode the destructive actions are absent here exactly as they are from the keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# Bindings that are plumbing rather than operator actions.
_HIDDEN = {"command_palette", "cursor", "page", "jump", "select", "app.focus_previous", "app.focus_next"}


class OpsCommands(Provider):
    def _commands(self) -> Iterator[tuple[str, str, object]]:
        """(title, help, callback) for every action reachable from the current screen."""
        screen = self.screen
        app = self.app
        seen: set[str] = set()
        for node in (screen, app):
            for _key, binding in node._bindings:
                action = binding.action
                name = action.split("(")[0]
                # Our actions carry an id (remappable); Textual's plumbing bindings do not.
                if binding.id is None or name in _HIDDEN or binding.description in seen:
                    continue
                if node.check_action(name, ()) is False:
                    continue
                seen.add(binding.description)
                keys = app.get_key_display(binding)
                title = binding.description
                if "switch_mode(" in action:
                    title = f"Go to {binding.description}"
                yield title, f"key: {keys}", partial(node.run_action, action)

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, text=title, help=help_text)
