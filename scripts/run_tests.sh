#!/usr/bin/env bash
# The whole test suite, after `ruff check .` (ruff.toml; a lint finding fails the run). Starts a PulseAudio
# null sink (real loopback audio for the sounddevice backend tests) when pulseaudio is installed, and stops it afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
# Lint first (ruff.toml: pyflakes + pycodestyle errors/warnings, 120 columns): a finding fails the run.
if ! .venv/bin/ruff check .; then
  echo "[test] ruff check . reported the findings above: fix them (or run .venv/bin/ruff check --fix .) before the tests run" >&2
  exit 1
fi
started_pulse=0
if command -v pulseaudio >/dev/null 2>&1 && ! pulseaudio --check 2>/dev/null; then
  export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
  chmod 700 "$XDG_RUNTIME_DIR"
  if pulseaudio --daemonize=yes --exit-idle-time=-1 -n --load=module-native-protocol-unix \
      --load="module-null-sink sink_name=nullsink" --load=module-always-sink 2>/dev/null; then
    started_pulse=1
  else
    echo "[test] could not start PulseAudio: the loopback audio tests will say why they are skipped" >&2
  fi
fi
bash scripts/with_ros_env.sh .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=600 "${@:-test}"
rc=$?
[ $started_pulse = 1 ] && pulseaudio --kill 2>/dev/null
exit $rc
