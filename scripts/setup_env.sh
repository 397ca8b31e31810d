#!/usr/bin/env bash
# Create .venv (Python 3.11) with the pinned dependencies and the package in editable mode.
# Idempotent: re-runs pip only when requirements.txt or setup.py changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
stamp="$VENV/.installed"

# System packages: PortAudio for sounddevice; PulseAudio for the loopback audio tests.
need_apt=()
ldconfig -p 2>/dev/null | grep -q libportaudio.so.2 || need_apt+=(libportaudio2)
command -v pulseaudio >/dev/null 2>&1 || need_apt+=(pulseaudio libasound2-plugins alsa-utils)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] apt-get install ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "[setup] WARNING: please install ${need_apt[*]} (sudo apt-get install ...)" >&2
  fi
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "[setup] Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV with $PY"; "$PY" -m venv "$VENV"; }
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  start=$(date +%s)
  echo "[setup] installing pinned dependencies (a few minutes the first time)"
  "$VENV/bin/pip" install -q -r requirements.txt 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  "$VENV/bin/pip" install -q --no-deps -e . 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  touch "$stamp"
  echo "[setup] done in $(( $(date +%s) - start )) s; $(du -sh "$VENV" | cut -f1) in $VENV"
fi
