# Shared by the scripts (sourced, not run): a scratch directory, a throwaway PostgreSQL cluster
# in it, and free ports. PostgreSQL's server programs refuse to run as root; as root they run as
# the `postgres` user.
#
#   . scripts/lib.sh
#   scratch job-service-bench             # sets $work, a directory PostgreSQL may write in
#   pg_find_bin initdb pgbench            # sets $pg_bin, or exits saying how to get them
#   pg_start -c max_connections=200       # a cluster in $work/pg on a Unix socket, no TCP
#   url=$(pg_url bench)                   # creates database `bench`, gives its URL
#   pg_stop                               # in the script's cleanup
#   cpu_ticks_of PID POSTMASTER_PID        # CPU so far: the process, PostgreSQL, the machine

# Runs a command as the user PostgreSQL's programs run as.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Makes $work, a scratch directory named after $1 that the postgres user may write in.
scratch() {
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$work"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$work"; fi
}

# Sets $pg_bin to the newest installed PostgreSQL's programs (or JOB_SERVICE_POSTGRES_BIN_DIR),
# checking that each named program is there.
pg_find_bin() {
  pg_bin=${JOB_SERVICE_POSTGRES_BIN_DIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
  local program
  for program in "$@"; do
    if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/$program" ]; then
      echo "PostgreSQL's $program was not found: install PostgreSQL (apt-get install postgresql)" \
           "or set JOB_SERVICE_POSTGRES_BIN_DIR" >&2
      exit 1
    fi
  done
}

# Starts a new cluster in $work/pg, listening on a Unix socket in that directory only; the
# arguments are server settings (`-c name=value ...`).
pg_start() {
  [ -n "${pg_bin:-}" ] || pg_find_bin initdb pg_ctl
  as_pg "$pg_bin/initdb" -D "$work/pg" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
  as_pg "$pg_bin/pg_ctl" start -D "$work/pg" -l "$work/pg/server.log" -w \
    -o "-c listen_addresses='' -k $work/pg $*" >/dev/null
}

# Prints the URL of database $1 of the cluster, creating it first (unless it is `postgres`);
# call it once a database.
pg_url() {
  if [ "$1" != postgres ]; then
    as_pg "$pg_bin/createdb" -h "$work/pg" -U postgres "$1"
  fi
  echo "postgres://postgres@localhost/$1?host=$work/pg"
}

# Stops the cluster, if one was started.
pg_stop() {
  if [ -d "${work:-}/pg" ]; then
    as_pg "$pg_bin/pg_ctl" stop -D "$work/pg" -m immediate -w >/dev/null 2>&1 || true
  fi
}

# Prints a TCP port of 127.0.0.1 that is free now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Prints the CPU time so far, in clock ticks, of: the process $1 (the service), PostgreSQL (the
# postmaster $2, its live backends and the ones that ended) and the whole machine (busy time of
# all cores), on one line.
cpu_ticks_of() {
  python3 - "$1" "$2" <<'PY'
import os, sys
def stat(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
service, postmaster = sys.argv[1:]
own = lambda f: int(f[11]) + int(f[12]) if f else 0
pg = stat(postmaster)
pg_ticks = own(pg) + int(pg[13]) + int(pg[14])
for pid in filter(str.isdigit, os.listdir("/proc")):
    f = stat(pid)
    if f and f[1] == postmaster:
        pg_ticks += own(f)
cpu = [int(x) for x in open("/proc/stat").readline().split()[1:]]
busy = sum(cpu[:8]) - cpu[3] - cpu[4]
print(own(stat(service)), pg_ticks, busy)
PY
}
