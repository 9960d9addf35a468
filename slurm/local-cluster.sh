#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, everything in one folder (configs, state, logs, sockets, pid
# files); nothing under /etc is touched. For trying the job scripts here and for the test of them. Needs root and
# `apt-get install -y slurm-wlm munge`.
#   slurm/local-cluster.sh start DIR [CPUS]   starts munged, slurmctld and slurmd; prints `export SLURM_CONF=DIR/slurm.conf`
#   slurm/local-cluster.sh stop DIR           stops the daemons it started there (by the pids in DIR/*.pid)
# Then, in the same shell: export SLURM_CONF=DIR/slurm.conf; sinfo; slurm/submit.sh ...
set -euo pipefail
command=${1:?usage: slurm/local-cluster.sh start|stop DIR [CPUS]}
dir=${2:?usage: slurm/local-cluster.sh start|stop DIR [CPUS]}

stop() {
  # Jobs first (their slurmstepd outlives slurmd), then the daemons, each by the pid in its pid file.
  if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF="$dir/slurm.conf" scancel --partition=debug 2>/dev/null || true
    for _ in $(seq 20); do [ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  for daemon in slurmd slurmctld munged; do
    pidfile="$dir/$daemon.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

if [ "$command" = stop ]; then stop; exit 0; fi
[ "$command" = start ] || { echo "local-cluster.sh: unknown command '$command' (start|stop)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "local-cluster.sh: needs root (slurmd runs jobs as their user)" >&2; exit 1; }
for tool in munged mungekey slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || { echo "local-cluster.sh: $tool not found; apt-get install -y slurm-wlm munge" >&2; exit 1; }
done
cpus=${3:-$(nproc)}
ctld_port=${CARSO_SLURMCTLD_PORT:-16817}
slurmd_port=${CARSO_SLURMD_PORT:-16818}
host=$(hostname -s)
mkdir -p "$dir/state" "$dir/spool" "$dir/logs"
chmod 755 "$dir"   # munged wants its socket's folder reachable by everyone
trap 'stop; exit 1' ERR

mungekey --create --keyfile="$dir/munge.key" --force 2>/dev/null || mungekey -c -k "$dir/munge.key" -f
chmod 600 "$dir/munge.key"
munged --socket="$dir/munge.socket" --key-file="$dir/munge.key" --log-file="$dir/logs/munged.log" \
  --pid-file="$dir/munged.pid" --seed-file="$dir/munged.seed"

cat > "$dir/slurm.conf" <<CONF
ClusterName=carso-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/logs/slurmctld.log
SlurmdLogFile=$dir/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld
slurmd
for _ in $(seq 60); do
  if sinfo -h -o %t 2>/dev/null | grep -qx idle; then echo "export SLURM_CONF=$dir/slurm.conf"; exit 0; fi
  sleep 0.5
done
echo "local-cluster.sh: the node did not come up within 30 s; see $dir/logs/" >&2
stop
exit 1
