"""Job types named by the ``jobs`` setting (``jobs = ["slimyq_testjobs_cfg"]``), not an entry point."""

from __future__ import annotations

from typing import Literal

from slimyq import JobContext, Payload, job_type


class GuildSettings(Payload):
    guild_id: str
    mode: Literal["quiet", "loud"] = "quiet"


@job_type("guild_settings", queue="database", payload=GuildSettings, help="Apply a guild's settings.")
def guild_settings(p: GuildSettings, ctx: JobContext) -> dict[str, str]:
    return {"guildId": p.guild_id, "mode": p.mode, "jobId": ctx.job_id}
