"""The start-up report of every process: which providers are live, emulated or disabled.

A disabled provider (no credentials, no ``IMAGEJOBS_EMULATOR_URL``) gets one warning that names the settings
that would enable it; its models are listed as unavailable and refused with a 400 (``shared.catalog``).
"""

from __future__ import annotations

import logging

from shared.config import Settings


def provider_report(settings: Settings) -> tuple[str, str | None]:
    """The info line (every provider's mode) and the warning line (the disabled ones; None without any)."""
    sections = settings.provider_sections()
    modes = ", ".join(f"{name}={section.mode}" for name, section in sections.items())
    info = f"providers: {modes}"
    if settings.emulator_url is not None and any(section.mode == "emulated" for section in sections.values()):
        info += f" (emulator at {settings.emulator_url})"
    disabled = [
        f"{name} (set {' and '.join(section.credential_settings(name))})"
        for name, section in sections.items()
        if section.mode == "disabled"
    ]
    if not disabled:
        return info, None
    return info, f"providers disabled for want of credentials, their models are refused: {', '.join(disabled)}"


def log_provider_report(settings: Settings, log: logging.Logger) -> None:
    info, warning = provider_report(settings)
    log.info(info)
    if warning is not None:
        log.warning(warning)
