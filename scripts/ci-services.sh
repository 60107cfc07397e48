#!/usr/bin/env bash
# Installs and starts what the operations tests need on a Debian machine (root):
#   etcd (the tests start their own etcd from the binary), a single-node SLURM cluster (munge,
#   slurmctld, slurmd) for test/ops-slurm.test.ts, chromium for the dashboard test, and an sshd on
#   127.0.0.1:2222 for test/ops-ssh.test.ts (throwaway keys in $PHALANX_SSHD_DIR, default /tmp/phalanx-sshd;
#   only that directory's client key may log in; no password logins; ~/.ssh is not touched).
# Idempotent: a second run only checks that the daemons are up. Usage: bash scripts/ci-services.sh
set -euo pipefail

need=()
command -v etcd >/dev/null || need+=(etcd-server etcd-client)
command -v sbatch >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
command -v chromium >/dev/null || need+=(chromium)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
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

# sshd for the SSH launcher test: its own config, host key and authorized key, all in one temp dir.
sshd_dir="${PHALANX_SSHD_DIR:-/tmp/phalanx-sshd}"
mkdir -p "$sshd_dir" /run/sshd
chmod 0700 "$sshd_dir"
chmod 0755 /run/sshd
[ -s "$sshd_dir/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C phalanx-ci-host -f "$sshd_dir/host_key"
[ -s "$sshd_dir/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C phalanx-ci-client -f "$sshd_dir/client_key"
cp "$sshd_dir/client_key.pub" "$sshd_dir/authorized_keys"
chmod 0600 "$sshd_dir/authorized_keys"
cat > "$sshd_dir/sshd_config" <<CONF
# Throwaway sshd for Phalanx CI (written by scripts/ci-services.sh): loopback only, key logins only.
ListenAddress 127.0.0.1:2222
HostKey ${sshd_dir}/host_key
PidFile ${sshd_dir}/sshd.pid
AuthorizedKeysFile ${sshd_dir}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
UseDNS no
AllowTcpForwarding local
X11Forwarding no
PermitTTY no
LogLevel ERROR
CONF
if ! { [ -s "$sshd_dir/sshd.pid" ] && kill -0 "$(cat "$sshd_dir/sshd.pid")" 2>/dev/null; }; then
  /usr/sbin/sshd -f "$sshd_dir/sshd_config" -E "$sshd_dir/sshd.log"
fi
for _ in $(seq 1 50); do
  ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -i "$sshd_dir/client_key" -p 2222 127.0.0.1 true 2>/dev/null && break
  sleep 0.2
done
ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
  -i "$sshd_dir/client_key" -p 2222 127.0.0.1 true || { echo "ci-services: sshd on 127.0.0.1:2222 does not accept $sshd_dir/client_key" >&2; cat "$sshd_dir/sshd.log" >&2 || true; exit 1; }

# Wait (bounded) for the node to be idle.
for _ in $(seq 1 60); do
  state="$(sinfo -h -n "$host" -o '%T' 2>/dev/null || true)"
  case "$state" in
    idle*|mixed*|allocated*) echo "ci-services: slurm node ${host} is ${state}; etcd $(etcd --version | head -1 | awk '{print $3}'); chromium $(command -v chromium); sshd 127.0.0.1:2222 ($sshd_dir)"; exit 0 ;;
    down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
echo "ci-services: slurm node ${host} did not become idle" >&2
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
