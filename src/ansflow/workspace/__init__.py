"""The workspace store: what steps change in their workspace, kept content-addressed so a
step on any host sees what its dependencies left (``store``), plus artifacts and caches.
The rule for parallel branches that changed one path is in ``store``'s docstring."""
