#!/usr/bin/env bash
# Mutation testing of the pure core: mutmut plants one small bug at a time in the modules below and runs the
# fast tests that reach the mutated function; a mutant the tests do not notice "survives".
#
#   bash tests/mutation.sh            every module (about 6 minutes on 2 busy cores)
#   bash tests/mutation.sh batching   only the modules whose name contains a word (batching, auth, policy …)
#
# Prints `killed N of M` per module and in total, lists every survivor that tests/mutation-equivalent.md does
# not explain (see one with `.venv/bin/mutmut show NAME`), and exits 1 when there is one or the total is
# below 90 %. Not part of CI (too slow for every push); the configuration is [tool.mutmut] in pyproject.toml,
# mutmut's working copy is mutants/ (ignored by git, rebuilt on every run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "no .venv: install the project first (see README, development)" >&2; exit 2; }

want=$(sed -n 's/^mutmut==//p' tests/requirements-mutation.txt)
have=$("$PY" -c 'import importlib.metadata as m; print(m.version("mutmut"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "installing mutmut $want into .venv (tests/requirements-mutation.txt)"
  "$PY" -m pip install -q -r tests/requirements-mutation.txt
fi

# Which functions are mutated, per module (mutmut's names: module.x_function, module.xǁClassǁmethod).
# app/models/encoding.py: tokenization and truncation (pad_rows needs torch: tests/models covers it).
# app/web/auth.py: only the decision (secrets, the failure limiter, the authenticator, the Basic header);
# its file handling, CLI and HTTP rendering are tested through servers, not here.
declare -A SELECT=(
  [batching]="app.engine.batching.*"
  [limiter]="app.engine.limiter.*"
  [encoding]="app.models.encoding.x_encode_texts__* app.models.encoding.x_encode_pairs__*
              app.models.encoding.x_model_max_length__* app.models.encoding.xǁEncodedǁ*"
  [schema]="app.models.uninlu.schema.*"
  [prompt]="app.models.uninlu.prompt.*"
  [decode]="app.models.uninlu.decode.*"
  [auth]="app.web.auth.x_hash_password__* app.web.auth.xǁSecretǁ* app.web.auth.xǁFailureLimiterǁ* app.web.auth.x_parse_basic__*
          app.web.auth.xǁAuthenticatorǁcheck__* app.web.auth.xǁAuthenticatorǁ_verify__* app.web.auth.xǁAuthenticatorǁset_credentials__*
          app.web.auth.xǁAuthenticatorǁ_start_check__* app.web.auth.xǁAuthenticatorǁ_end_check__*
          app.web.auth.xǁAuthenticatorǁ_remembered__* app.web.auth.xǁAuthenticatorǁ_remember__*"
  [policy]="launcher.policy.*"
)
ORDER=(batching limiter encoding schema prompt decode auth policy)
modules=()
for m in "${ORDER[@]}"; do
  if [ $# -eq 0 ] || [[ " $* " == *" $m "* ]]; then modules+=("$m"); fi
done
[ ${#modules[@]} -gt 0 ] || { echo "no module matches '$*'; choose from: ${ORDER[*]}" >&2; exit 2; }
patterns=()
for m in "${modules[@]}"; do
  # shellcheck disable=SC2206  # word splitting of the pattern list is wanted, globbing is not
  set -f; patterns+=(${SELECT[$m]}); set +f
done

rm -rf mutants  # a fresh run: figures never mix results from an older tree
# Property tests (tests/unit/test_batching.py) run fewer examples and skip shrinking under this variable.
export WENMO_MUTATION=1
start=$(date +%s)
log=$(mktemp)
if ! .venv/bin/mutmut run "${patterns[@]}" >"$log" 2>&1; then
  tail -c 3000 "$log" | tr '\r' '\n' | tail -40 >&2
  echo "mutmut failed (full log: $log)" >&2
  exit 2
fi
elapsed=$(( $(date +%s) - start ))

MUTATION_SELECT=$(set -f; for m in "${modules[@]}"; do echo "$m=$(echo ${SELECT[$m]})"; done) \
  "$PY" - "$elapsed" "${modules[@]}" <<'EOF'
"""Count the verdicts of the selected mutants from mutmut's result files (mutants/**/*.meta)."""
import fnmatch
import json
import os
import re
import sys
from pathlib import Path

elapsed, modules = int(sys.argv[1]), sys.argv[2:]
select = dict(line.split("=", 1) for line in os.environ["MUTATION_SELECT"].splitlines())
KILLED = {1, 3, 36, -24, 24, 152, 255}  # a failing test, pytest's internal error, or a timeout
explained = set(re.findall(r"`([\w.ǁ]+__mutmut_\d+)`", Path("tests/mutation-equivalent.md").read_text("utf-8")))

results = {}
for meta in Path("mutants").rglob("*.meta"):
    results.update(json.loads(meta.read_text("utf-8"))["exit_code_by_key"])

total_killed = total = 0
unexplained = []
for m in modules:
    names = [n for n in results if any(fnmatch.fnmatchcase(n, p) for p in select[m].split())]
    killed = [n for n in names if results[n] in KILLED]
    other = sorted(set(names) - set(killed))
    equivalent = [n for n in other if n in explained]
    total_killed += len(killed)
    total += len(names)
    unexplained += [(n, results[n]) for n in other if n not in explained]
    print(f"{m:9} killed {len(killed)} of {len(names)}"
          + (f" ({100 * len(killed) / len(names):.1f} %)" if names else "")
          + (f"; {len(equivalent)} equivalent (tests/mutation-equivalent.md)" if equivalent else ""))
share = 100 * total_killed / total if total else 0.0
print(f"total     killed {total_killed} of {total} ({share:.1f} %) in {elapsed // 60} min {elapsed % 60} s")
codes = {0: "survived", None: "not run", 33: "no tests", 5: "no tests"}
for name, code in sorted(unexplained):
    print(f"  {codes.get(code, f'exit {code}')}: {name}   (.venv/bin/mutmut show {name})")
if unexplained or share < 90:
    sys.exit(1)
EOF
