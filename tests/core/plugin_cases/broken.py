"""A plugin whose import fails, as one with a missing dependency would."""
import lunaos_case_dependency_that_is_not_installed  # noqa: F401

from app.plugins import Plugin

plugin = Plugin(name="broken")
