"""deploy.sh's --help text (README.md "Deploying: deploy.sh" has the details of each option)."""

HELP = """\
Usage: ./deploy.sh [COMMAND] [OPTIONS]        (as root, or through sudo)

Commands:
  install              (default) check the machine, install or upgrade, configure, download the
                       models, create the password once, start the service, wait until it is ready
  status               running and ready? exit 0 ready, 1 running but not ready, 3 stopped, 4 not installed
  logs [-f]            the last 200 log lines (-f: follow)
  start | stop | restart
  uninstall [--purge]  remove the service, code and virtualenv; keeps models, password, state and
                       wenmo.override.env unless --purge
  profile              print the settings for this machine's GPU, or the CPU (python -m app profile)

Install options (remembered for re-runs: flags that set WENMO_* values go to wenmo.override.env,
--cpu/--demo/--no-systemd/--user/--python to <prefix>/etc/deploy.conf):
  --prefix DIR         where everything goes (default /opt/wenmo)
  --port N             port to serve on (default 7860)
  --host ADDR          address to bind (default 0.0.0.0: every interface)
  --user NAME          unprivileged account the service runs as (default wenmo, created if missing)
  --models-dir DIR     ModelScope cache; an existing copy there is used as is (default <prefix>/models)
  --cpu | --gpu        run on the CPU (no NVIDIA GPU needed) | back to the GPU
  --demo | --no-demo   tiny offline models: a first look without network or GPU (outputs meaningless)
  --no-systemd | --systemd
                       the launcher as a background process (pid file + log file) | a systemd unit;
                       default: systemd where it runs (PID 1), else --no-systemd (containers)
  --rotate-password    make a new password (otherwise the first one is kept forever)
  --dry-run            print every action, the settings and the unit file; change nothing
  --python PATH        Python 3.10+ to build the virtualenv from (default /usr/bin/python3)
  --wait-s N           how long to wait for /readyz (default 900)
  --max-batch-tokens N, --max-batch-size N, --max-length N, --max-concurrent N,
  --threshold-mib N, --drain-s N
                       override the profile (WENMO_MAX_*, WENMO_LAUNCHER_THRESHOLD_MIB,
                       WENMO_LAUNCHER_DRAIN_S)
  --set NAME=VALUE     any other app/launcher setting, e.g. --set WENMO_MAX_QUEUE=64
  --purge              with uninstall: also delete models, password, settings, state and the user
  -f, --follow         with logs: follow
  --gpu-spec 'NAME, MIB, CC'
                       with profile: the GPU to print the profile for (repeatable)
  -h, --help           this text

Environment: WENMO_DEPLOY_PIP_ARGS="..." adds arguments to every pip install (an index, a cache).
With a pyproject.toml [project] table the project itself is installed into the virtualenv, and the
service runs its wenmo-launcher command.
"""
