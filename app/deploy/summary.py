"""What deploy.sh prints at the end: where the service answers, how to read the password and try the API, where
the settings are, how to manage it. Every command in it runs as printed (`sudo` only for a user who came
through sudo: the reader is that user, the files are root's)."""

from __future__ import annotations

from pathlib import Path

from app.deploy.probes import base_url


def summary(*, host: str, port: str, address: str, prefix: Path, http_user: str, sudo: str,
            dry_run: bool, took: str) -> str:
    etc, url = prefix / "etc", base_url(host, port)
    cred = etc / "credentials" / "wenmo-auth"
    state = "not installed: this was a dry run" if dry_run else "running and ready"
    lines = ["", f"Wenmo is {state} (took {took})."]
    if host in ("0.0.0.0", "::", "[::]"):
        lines += [f"  URL        http://{address or '<this machine>'}:{port}/   (this machine: {url})",
                  f"             open TCP port {port} in the cloud firewall / security group to reach it from outside"]
    else:
        lines.append(f"  URL        {url}")
    lines += [
        f"  user       {http_user}",
        f"  password   {sudo}cut -d: -f2- {cred}",
        f'  try it     curl -u "$({sudo}cat {cred})" {url}v1/embeddings -H "Content-Type: application/json" '
        """-d '{"input": ["你好"]}'""",
        f"  settings   {etc}/wenmo.env (generated) and {etc}/wenmo.override.env (yours)",
        f"  manage     {sudo}{prefix}/src/deploy.sh status | logs [-f] | restart | stop | uninstall",
    ]
    return "\n".join(lines) + "\n"
