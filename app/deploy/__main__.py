"""`python3 -m app.deploy COMMAND …`: deploy.sh's questions to Python (see app/deploy/__init__.py).

Exit status: 0 done; 1 a check failed (deploy.sh's error, with what to do, on stderr); 2 a bad call.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from app.deploy import Stop, files, gpu, models, probes, service
from app.deploy.mode import decide
from app.deploy.probes import base_url
from app.deploy.summary import summary
from app.deploy.unit import Unit
from app.deploy.usage import HELP
from app.settingsfiles import put_file


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m app.deploy", description="deploy.sh's Python side")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("help", help="print deploy.sh's --help")

    g = sub.add_parser("gpu", help="check the GPU (nvidia-smi): shell assignments CPU, GPU_DRIVER, GPU_SPECS")
    g.add_argument("--nvidia-smi", default="nvidia-smi")
    g.add_argument("--cpu", action="store_true", help="the CPU was asked for")
    g.add_argument("--demo", action="store_true", help="no GPU is fine: the demo runs on the CPU")
    g.add_argument("--profile", action="store_true", help="for `deploy.sh profile`: no GPU means the CPU profile")

    o = sub.add_parser("port", help="say whether the service's port is free; stop when another program holds it")
    o.add_argument("--host", required=True)
    o.add_argument("--port", type=int, required=True)
    o.add_argument("--ours-running", action="store_true", help="this Wenmo runs (and holds the port)")

    t = sub.add_parser("traversable", help="stop unless USER can enter every directory above PREFIX")
    t.add_argument("--user", required=True)
    t.add_argument("prefix", type=Path)

    w = sub.add_parser("unit", help="write the systemd unit (--show: print what would be written)")
    for name in ("--service", "--user", "--group", "--state-dir", "--port", "--drain-s", "--exec-start", "--write"):
        w.add_argument(name, required=True)
    w.add_argument("--prefix", type=Path, required=True)
    w.add_argument("--stop-timeout-s", type=int, required=True)
    w.add_argument("--systemd-version", default="")

    f = sub.add_parser("record", help="write <etc>/deploy.conf, deploy.sh's record of the installation")
    f.add_argument("--etc", type=Path, required=True)
    f.add_argument("values", nargs="*", metavar="KEY=VALUE")

    d = sub.add_parser("ds-config", help="install ds_config.json into <etc>, keeping an edited one")
    d.add_argument("--etc", type=Path, required=True)
    d.add_argument("--new", type=Path, required=True, help="the checkout's ds_config.json")

    k = sub.add_parser("disk", help="say the free disk space; stop where it is too little")
    k.add_argument("--need", nargs=3, action="append", default=[], metavar=("PATH", "MIB", "WHAT"))

    m = sub.add_parser("models", help="download the models not yet complete in the models directory")
    m.add_argument("--model-dir", type=Path, required=True)
    m.add_argument("--venv", type=Path, required=True)
    m.add_argument("--src", type=Path, required=True, help="the installed code, where the resolver runs")
    m.add_argument("--user", required=True, help="the service user: as root, it gets the downloads")
    m.add_argument("--group", required=True)
    m.add_argument("ids", nargs="+", metavar="ROLE=ID")

    c2 = sub.add_parser("code", help="copy the code into <prefix>/src")
    c2.add_argument("--repo", type=Path, required=True)
    c2.add_argument("--src", type=Path, required=True)

    for name in ("status", "wait"):
        x = sub.add_parser(name, help="print the service's state (exit 0 ready, 1 not ready, 3 stopped)"
                           if name == "status" else "wait until GET URL answers 200")
        for option in ("--mode", "--service", "--host", "--port"):
            x.add_argument(option, required=True)
        for option in ("--pid-file", "--log-file", "--state-dir"):
            x.add_argument(option, type=Path, required=True)
        x.add_argument("--wait-s", type=int, default=900)
        x.add_argument("--prog", default="./deploy.sh")
        x.add_argument("--show", action="store_true", help="a dry run: say what it would wait for")

    n = sub.add_parser("uninstall", help="remove the installed files (--purge: yours too)")
    n.add_argument("--prefix", type=Path, required=True)
    n.add_argument("--state-dir", type=Path, required=True)
    n.add_argument("--user", required=True)
    n.add_argument("--user-created", action="store_true", help="deploy.sh created the user: --purge deletes it")
    n.add_argument("--purge", action="store_true")

    o2 = sub.add_parser("mode", help="systemd or the launcher alone, and who may install it: shell assignments")
    o2.add_argument("--asked", default="", choices=("", "systemd", "background"))
    o2.add_argument("--user", required=True)
    o2.add_argument("--prefix", type=Path, required=True)
    o2.add_argument("--args", default="", help="deploy.sh's arguments, for the command to run as root")
    o2.add_argument("--prog", default="./deploy.sh")

    wr = sub.add_parser("writable", help="stop unless PATH can be created (--create: create it)")
    wr.add_argument("path", type=Path)
    wr.add_argument("what", help="what PATH is, for the message: the prefix, the models directory")
    wr.add_argument("--create", action="store_true")

    for each in (w, f, d, m, c2, n, o2):
        each.add_argument("--show", action="store_true", help="a dry run: print what would be written")

    s = sub.add_parser("summary", help="print the closing summary")
    for name in ("--host", "--port", "--http-user", "--took"):
        s.add_argument(name, required=True)
    s.add_argument("--prefix", type=Path, required=True)
    s.add_argument("--address", default="")
    s.add_argument("--dry-run", action="store_true")

    c = sub.add_parser("torch", help="(the virtualenv's Python, as the service user) check the installed torch")
    c.add_argument("--cpu", action="store_true")
    c.add_argument("--driver", default="")

    for each in (g, o, t, c, s):  # what the messages name: this deploy.sh, and `sudo ` for a user who is not root
        each.add_argument("--prog", default="./deploy.sh")
        each.add_argument("--sudo", default="")
    return p


def run(args: argparse.Namespace) -> str | int:
    """What to print, or (status) the exit status."""
    if args.command == "help":
        return HELP
    if args.command == "gpu":
        return gpu.shell_assignments(*gpu.check(args.nvidia_smi, cpu=args.cpu, demo=args.demo, profile=args.profile,
                                                prog=args.prog, sudo=args.sudo))
    if args.command == "unit":
        version = int(args.systemd_version) if args.systemd_version.isdigit() else 999
        unit = Unit(args.prefix, args.service, args.user, args.group, args.state_dir, args.port, args.drain_s,
                    args.stop_timeout_s, args.exec_start, version)
        put_file(Path(args.write), unit.render(), args.show)
        return ""
    if args.command in ("record", "ds-config"):
        if args.command == "record":
            files.write_record(args.etc, args.values, args.show)
        else:
            files.install_ds_config(args.etc, args.new, args.show)
        return ""
    if args.command == "summary":
        return summary(host=args.host, port=args.port, address=args.address, prefix=args.prefix,
                       http_user=args.http_user, sudo=args.sudo,
                       dry_run=args.dry_run, took=args.took)
    if args.command == "mode":
        return decide(args.asked, args.user, args.prefix, args.prog, args.args, args.show)
    if args.command == "uninstall":
        files.uninstall(args.prefix, args.state_dir, args.user, args.user_created, args.purge, args.show)
        return ""
    if args.command == "code":
        return f"    {files.install_code(args.repo, args.src, args.show)}\n"
    if args.command in ("status", "wait"):
        url = base_url(args.host, args.port) + "readyz"
        if args.command == "status":
            return service.status(args.mode, args.service, args.pid_file, args.log_file, url, args.state_dir)
        return service.wait_ready(url, args.wait_s, args.mode, args.service, args.pid_file, args.log_file, args.prog,
                                  args.show)
    if args.command == "models":
        ids = dict(item.split("=", 1) for item in args.ids)
        models.fetch(ids, args.model_dir, args.venv, args.src, args.user, args.group, args.show)
        return ""
    if args.command == "port":
        return "    " + probes.check_port(args.host, args.port, args.ours_running, args.prog) + "\n"
    if args.command == "disk":
        return "".join(f"    {line}\n" for line in probes.check_disk(args.need))
    if args.command == "writable":
        probes.check_writable(args.path, args.what, args.create)
        return ""
    if args.command == "traversable":
        probes.check_traversable(args.user, args.prefix)
        return ""
    return "".join(f"    {line}\n" for line in probes.torch_report(args.cpu, args.driver, args.sudo))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        out = run(args)
        if isinstance(out, int):
            return out
        sys.stdout.write(out)
    except Stop as e:
        sys.stderr.write(e.render())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
