#!/usr/bin/env bash
# Install the text-to-speech engines the offline corpus needs (Debian/Ubuntu packages espeak-ng and flite) and sox,
# whose binary applies s3prl's sox effects (ASV's silence trimming; common/effects.py).
set -u
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v flite >/dev/null 2>&1 || missing+=(flite)
command -v sox >/dev/null 2>&1 || missing+=(sox)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} (needed to synthesise the offline mini-SUPERB corpus and trim ASV's silence as SUPERB)"
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  if $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then exit 0; fi
fi
cat >&2 <<MSG
ERROR: could not install ${missing[*]}.
  On Debian/Ubuntu run:   sudo apt-get install -y espeak-ng flite sox
  On macOS (Homebrew):    brew install espeak-ng flite sox
Then re-run the make command. Everything except building the offline corpus works without espeak-ng and flite;
without sox, ASV does not trim silence as SUPERB does (it says so).
MSG
exit 1
