# Shared by the scripts: messages, Debian packages, and background
# processes tracked by pid files. Set LOG_TAG before sourcing.

say() { printf '[%s] %s\n' "$LOG_TAG" "$*"; }
die() { printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

# Installs those of the given Debian packages that are missing, without
# their recommended extras. The package lists are refreshed only when an
# install fails without it (a new machine's lists may be empty or stale).
apt_install() {
  local missing=() pkg sudo=""
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "please install: ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing ${missing[*]} (apt, once)"
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}")
  $sudo "${install[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo "${install[@]}" >/dev/null; } \
    || die "apt-get could not install ${missing[*]}"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { # pidfile
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_bg() { # name pidfile log command...   (run from ROOT)
  local name=$1 pidfile=$2 log=$3; shift 3
  if pid_alive "$pidfile"; then return 0; fi
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$log")"
  (cd "$ROOT" && exec setsid nohup "$@" >>"$log" 2>&1 </dev/null) &
  echo $! >"$pidfile"
  say "started $name (pid $!, log $log)"
}

stop_bg() { # name pidfile signal grace-seconds: ask with signal, then SIGKILL
  local name=$1 pidfile=$2 sig=$3 grace=$4 pid
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill -"$sig" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  say "stopped $name"
}

# Docker Compose, as the v2 plugin (`docker compose`) or the v1
# `docker-compose`, whichever this machine has.
compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  elif command -v docker-compose >/dev/null; then
    docker-compose "$@"
  else
    die "needs docker compose (or docker-compose)"
  fi
}
