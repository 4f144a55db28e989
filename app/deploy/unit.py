"""The systemd unit deploy.sh writes: the launcher as an unprivileged service, the password as a credential."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Unit:
    prefix: Path
    service: str
    user: str
    group: str
    state_dir: str
    port: str
    drain_s: str
    stop_timeout_s: int
    exec_start: str  # the launcher's command line
    systemd_version: int = 999  # unknown: as the newest

    def credential_lines(self) -> list[str]:
        """systemd 251 and newer expand %d to the credentials directory; 247-250 know credentials but not %d;
        before 247 the password goes through a root-only EnvironmentFile as WENMO_AUTH."""
        cred_dir = self.prefix / "etc" / "credentials"
        if self.systemd_version < 247:
            return [f"EnvironmentFile={cred_dir}/wenmo-auth.env"]
        where = "%d" if self.systemd_version >= 251 else "/run/credentials/%n"
        return [f"LoadCredential=wenmo-auth:{cred_dir}/wenmo-auth", f"Environment=WENMO_AUTH_FILE={where}/wenmo-auth"]

    def render(self) -> str:
        etc = self.prefix / "etc"
        return "\n".join([
            "# Wenmo 文墨, written by deploy.sh; re-run deploy.sh to change it (edits here are overwritten).",
            f"# Settings: {etc}/wenmo.env and {etc}/wenmo.override.env (yours). Extra unit settings: "
            f"systemctl edit {self.service}",
            "[Unit]",
            f"Description=Wenmo Chinese text semantics (launcher watchdog + web app on port {self.port})",
            f"Documentation=file://{self.prefix}/src/README.md",
            "After=network-online.target",
            "Wants=network-online.target",
            "# systemd's limit on top of the launcher's own restart budget (it exits 3 when the app keeps failing)",
            "StartLimitIntervalSec=900",
            "StartLimitBurst=3",
            "",
            "[Service]",
            "Type=simple",
            f"User={self.user}",
            f"Group={self.group}",
            f"WorkingDirectory={self.prefix}/src",
            f"StateDirectory={self.service}",
            "StateDirectoryMode=0750",
            f"Environment=HOME={self.state_dir}",
            "Environment=PYTHONUNBUFFERED=1",
            "Environment=LANG=C.UTF-8",
            f"EnvironmentFile={etc}/wenmo.env",
            f"EnvironmentFile=-{etc}/wenmo.override.env",
            "# The password reaches the service as a credential file, never on a command line or in the environment.",
            *self.credential_lines(),
            f"ExecStart={self.exec_start}",
            "Restart=on-failure",
            "RestartSec=10",
            "# 2 = invalid configuration: restarting cannot fix it",
            "RestartPreventExitStatus=2",
            "KillMode=control-group",
            f"# longer than the drain (WENMO_LAUNCHER_DRAIN_S={self.drain_s}) so in-flight requests finish",
            f"TimeoutStopSec={self.stop_timeout_s}",
            "NoNewPrivileges=yes",
            "ProtectSystem=full",
            "PrivateTmp=yes",
            f"SyslogIdentifier={self.service}",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
        ]) + "\n"
