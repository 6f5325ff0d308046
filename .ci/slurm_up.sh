#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine (partition "cpu", all its
# cores) for tests/test_e2e/test_slurm.py: Debian's slurm-wlm and munge,
# daemons run as root. Idempotent; exits 0 with a message, leaving the
# test to skip, where it cannot (no root, no apt).
set -uo pipefail

if sinfo -h -p cpu -o %a 2>/dev/null | grep -q up; then
  echo "[slurm] a cluster with partition cpu is up"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "[slurm] not root: no local Slurm cluster"
  exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if ! command -v apt-get >/dev/null; then
    echo "[slurm] no apt-get: no local Slurm cluster"
    exit 0
  fi
  # The package lists of a fresh machine may be missing or stale: on a
  # failure, update them once and try again.
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge \
      >>/tmp/slurm_apt.log 2>&1
  }
  apt_install || { apt-get update -q >>/tmp/slurm_apt.log 2>&1 && apt_install; } || {
    echo "[slurm] apt-get install slurm-wlm munge failed (/tmp/slurm_apt.log)"
    exit 0
  }
fi

host=$(hostname -s)
cpus=$(nproc)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm \
  /run/munge
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
[ -f /etc/munge/munge.key ] || /usr/sbin/mungekey --create 2>/dev/null \
  || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
pgrep -x munged >/dev/null || /usr/sbin/munged --force
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
for _ in $(seq 1 30); do
  if sinfo -h -p cpu -o %a 2>/dev/null | grep -q up \
      && srun -p cpu -n 1 true 2>/dev/null; then
    echo "[slurm] one-node cluster up: partition cpu on $host, $cpus CPUs"
    exit 0
  fi
  sleep 1
done
echo "[slurm] the cluster did not come up (/var/log/slurm)"
exit 0
