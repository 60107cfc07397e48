#!/usr/bin/env bash
# Installs and starts what the operations tests need on a Debian machine (root):
#   etcd (the tests start their own etcd from the binary), a single-node SLURM cluster (munge,
#   slurmctld, slurmd) for test/ops-slurm.test.ts, and chromium for the dashboard test.
# Idempotent: a second run only checks that the daemons are up. Usage: bash scripts/ci-services.sh
set -euo pipefail

need=()
command -v etcd >/dev/null || need+=(etcd-server etcd-client)
command -v sbatch >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package starts etcd as a service on :2379 where systemd runs; the tests start their own.

host="$(hostname -s)"
cpus=8
conf=/etc/slurm/slurm.conf
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
cat > "$conf" <<CONF
# Single-node cluster for Phalanx CI (written by scripts/ci-services.sh).
ClusterName=phalanx
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# Lets this host declare more CPUs than it has, so a 2-core CI box can run a 4-task job.
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
KillWait=5
InactiveLimit=0
NodeName=${host} CPUs=${cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
# No cgroup.conf: with proctrack/linuxproc and task/none slurmd (22.05) only loads the cgroup plugin to probe.

if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
chmod 0700 /etc/munge

pgrep -x munged >/dev/null || su -s /bin/sh munge -c '/usr/sbin/munged' || /usr/sbin/munged --force
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

# Wait (bounded) for the node to be idle.
for _ in $(seq 1 60); do
  state="$(sinfo -h -n "$host" -o '%T' 2>/dev/null || true)"
  case "$state" in
    idle*|mixed*|allocated*) echo "ci-services: slurm node ${host} is ${state}; etcd $(etcd --version | head -1 | awk '{print $3}'); chromium $(command -v chromium)"; exit 0 ;;
    down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
echo "ci-services: slurm node ${host} did not become idle" >&2
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
