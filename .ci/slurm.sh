#!/usr/bin/env bash
# A real one-node SLURM cluster for CI, and the sample run through it (issue #7).
#
#   bash .ci/slurm.sh          # as root; called by .ci/run after the tests
#
# 1. installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing;
# 2. writes a one-node slurm.conf into a scratch directory (no systemd, no cgroups, no
#    accounting database: see the notes in shared/docs/slurm-notes.md), with its own ports and
#    its own munge socket, so it leaves a SLURM or munge already on the machine alone; the
#    one file outside it is a symlink /etc/slurm/slurm.conf -> that slurm.conf, made only when
#    no slurm.conf is there and removed at the end (the plugin's job steps drop SLURM_CONF
#    from their environment, so srun inside a job reads only the default path);
# 3. starts munged, slurmctld and slurmd by hand and waits for the node to be idle;
# 4. runs the workflow on data_sample/ with --workflow-profile workflow/profiles/slurm (under
#    `timeout -s KILL`: the SLURM plugin can hang and ignore SIGTERM), then the same workflow
#    locally into another directory, and compares every table byte for byte;
# 5. stops the daemons it started, by PID, whatever happened (trap).
# Idempotent: each run starts from a fresh scratch directory; daemons left by an earlier run
# that was killed (found through the PID files in the scratch directory) are stopped first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCRATCH=${QMRI_SLURM_DIR:-${TMPDIR:-/tmp}/qmri-slurm-ci}
TIMEOUT_S=${QMRI_SLURM_TIMEOUT:-1500}
VENV_BIN=$ROOT/.venv/bin
export PATH="$VENV_BIN:$PATH"
# Ports of our own (defaults are 6817/6818) so that a SLURM already on the machine is left alone.
CTLD_PORT=${QMRI_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${QMRI_SLURMD_PORT:-16818}

say() { printf '[slurm-ci %(%H:%M:%S)T] %s\n' -1 "$*"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "slurm-ci: needs root (installs packages, starts munged/slurmctld/slurmd)" >&2
    exit 1
fi
if ! "$VENV_BIN/python" -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
    echo "slurm-ci: snakemake-executor-plugin-slurm missing in .venv: run 'make install-test'" >&2
    exit 1
fi

# --- 1. packages ---------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
say "$(slurmctld -V), $(munged -V 2>&1 | head -1)"

# --- 2. scratch directory and configuration --------------------------------------------------
# Daemons of an earlier run of this script that did not stop (killed before its trap ran).
stop_pidfile() {  # stop_pidfile FILE NAME: stop the process in FILE if it is still NAME
    local file=$1 name=$2 pid
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    if [[ $pid =~ ^[0-9]+$ ]] && [[ $(ps -o comm= -p "$pid" 2>/dev/null) == "$name" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}
for pair in slurmd:slurmd slurmctld:slurmctld munged:munged; do
    stop_pidfile "$SCRATCH/run/${pair%%:*}.pid" "${pair##*:}"
done
ETC_CONF=/etc/slurm/slurm.conf
if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$SCRATCH/slurm.conf" ]]; then
    rm -f "$ETC_CONF"  # ours, from a run that was killed
fi
if [[ -e $ETC_CONF || -L $ETC_CONF ]]; then
    echo "slurm-ci: $ETC_CONF exists and is not ours: this machine has a SLURM configured;" \
        "not touching it" >&2
    exit 1
fi
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"/{run,log,state,spool,munge}
chmod 0755 "$SCRATCH"
chown munge:munge "$SCRATCH/munge"
chmod 0755 "$SCRATCH/munge"  # munged wants search permission for all on its socket dir

NODE=$(hostname -s)
# CPUs/Boards/Sockets/Cores/Threads as slurmd sees them; leave 1 GB of memory to the system.
read -r -a HW < <(slurmd -C | head -1)
NODE_LINE=""
for kv in "${HW[@]}"; do
    case $kv in
        NodeName=*) ;;
        RealMemory=*) NODE_LINE+=" RealMemory=$(( ${kv#RealMemory=} - 1024 ))" ;;
        *) NODE_LINE+=" $kv" ;;
    esac
done
export SLURM_CONF=$SCRATCH/slurm.conf
cat >"$SLURM_CONF" <<EOF
# One-node CI cluster written by .ci/slurm.sh: no systemd, no cgroups, no accounting.
ClusterName=qmrici
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SCRATCH/munge/munge.socket
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool
SlurmctldPidFile=$SCRATCH/run/slurmctld.pid
SlurmdPidFile=$SCRATCH/run/slurmd.pid
SlurmctldLogFile=$SCRATCH/log/slurmctld.log
SlurmdLogFile=$SCRATCH/log/slurmd.log
# no cgroups: track processes through /proc, no task affinity or containment
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# a line per finished job (sacct cannot read it; it is our record of what SLURM ran)
JobCompType=jobcomp/filetxt
JobCompLoc=$SCRATCH/log/jobcomp.txt
# CPUs and memory are consumable; a job without --mem gets 1 GB per CPU, not the whole node
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
# squeue must see finished jobs long enough for the Snakemake plugin's status checks
MinJobAge=3600
ReturnToService=2
MailProg=/bin/true
# start batch jobs at once (the default waits 3 s per job)
SchedulerParameters=batch_sched_delay=0
NodeName=$NODE NodeAddr=127.0.0.1$NODE_LINE State=UNKNOWN
PartitionName=ci Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# --- 3. daemons ---------------------------------------------------------------------------
MUNGED_PID="" SLURMCTLD_PID="" SLURMD_PID=""
stop_daemons() {
    local rc=$?
    set +e
    if [[ -n $SLURMCTLD_PID ]]; then
        # jobs still queued or running (after a timeout) end with the cluster
        scancel --full --user="$(id -un)" 2>/dev/null
        sleep 1
    fi
    for pair in "slurmd:$SLURMD_PID" "slurmctld:$SLURMCTLD_PID" "munged:$MUNGED_PID"; do
        local pid=${pair##*:}
        [[ -n $pid ]] || continue
        if [[ $(ps -o comm= -p "$pid" 2>/dev/null) == "${pair%%:*}" ]]; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$SLURM_CONF" ]]; then
        rm -f "$ETC_CONF"
    fi
    say "daemons stopped (exit $rc)"
    exit "$rc"
}
trap stop_daemons EXIT
trap 'exit 130' INT TERM
mkdir -p "$(dirname "$ETC_CONF")"
ln -s "$SLURM_CONF" "$ETC_CONF"

wait_pidfile() {  # wait_pidfile FILE: the PID a daemon wrote once it is up
    for _ in $(seq 100); do
        if [[ -s $1 ]]; then cat "$1"; return 0; fi
        sleep 0.1
    done
    echo "slurm-ci: no PID file $1" >&2
    return 1
}

setpriv --reuid=munge --regid=munge --init-groups \
    munged --socket="$SCRATCH/munge/munge.socket" --pid-file="$SCRATCH/munge/munged.pid" \
    --log-file="$SCRATCH/munge/munged.log" --seed-file="$SCRATCH/munge/munged.seed"
MUNGED_PID=$(wait_pidfile "$SCRATCH/munge/munged.pid")
cp "$SCRATCH/munge/munged.pid" "$SCRATCH/run/munged.pid"
munge -n --socket="$SCRATCH/munge/munge.socket" | unmunge --socket="$SCRATCH/munge/munge.socket" >/dev/null
slurmctld -i -f "$SLURM_CONF"
SLURMCTLD_PID=$(wait_pidfile "$SCRATCH/run/slurmctld.pid")
slurmd -f "$SLURM_CONF"
SLURMD_PID=$(wait_pidfile "$SCRATCH/run/slurmd.pid")
say "munged $MUNGED_PID, slurmctld $SLURMCTLD_PID, slurmd $SLURMD_PID (config $SLURM_CONF)"

state=""
for _ in $(seq 120); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 0.5
done
if [[ $state != idle ]]; then
    echo "slurm-ci: node $NODE is '${state:-unknown}', not idle, after 60 s" >&2
    tail -n 20 "$SCRATCH"/log/*.log >&2
    exit 1
fi
say "node $NODE idle: $(sinfo -h -o '%P %D %c CPUs %m MB')"

# --- 4. the sample through SLURM and locally ---------------------------------------------------
OUT_SLURM=$SCRATCH/out-slurm
OUT_LOCAL=$SCRATCH/out-local
# Absolute paths: every SLURM job step re-reads the Snakefile from inside output_dir (the
# `workdir:` of the workflow), where relative config paths would point elsewhere.
config_args() {  # config_args OUTPUT_DIR
    printf '%s\n' --configfile "$ROOT/config/config.yaml" --config "bids_dir=$ROOT/data_sample" \
        "labels_dir=$ROOT/data_sample/derivatives/labels" "output_dir=$1"
}
mapfile -t SLURM_ARGS < <(config_args "$OUT_SLURM")
mapfile -t LOCAL_ARGS < <(config_args "$OUT_LOCAL")
t0=$SECONDS
say "workflow through SLURM -> $OUT_SLURM"
if ! timeout -s KILL "$TIMEOUT_S" snakemake --workflow-profile workflow/profiles/slurm \
    "${SLURM_ARGS[@]}" >"$SCRATCH/log/snakemake-slurm.log" 2>&1; then
    echo "slurm-ci: the SLURM run failed or timed out (${TIMEOUT_S} s); its log ends:" >&2
    tail -n 60 "$SCRATCH/log/snakemake-slurm.log" >&2
    exit 1
fi
slurm_s=$((SECONDS - t0))
n_jobs=$(wc -l <"$SCRATCH/log/jobcomp.txt")
n_failed=$(grep -vc "JobState=COMPLETED" "$SCRATCH/log/jobcomp.txt" || true)
say "SLURM run: ${slurm_s} s, ${n_jobs} SLURM jobs (${n_failed} not COMPLETED)"
if [[ $n_jobs -eq 0 || $n_failed -ne 0 ]]; then
    echo "slurm-ci: expected SLURM jobs, all COMPLETED" >&2
    cat "$SCRATCH/log/jobcomp.txt" >&2
    exit 1
fi

# The local run: the one the end-to-end tests just made with the same config and inputs, when
# .ci/run passes it (QMRI_LOCAL_OUTPUT), else a run of its own.
if [[ -n ${QMRI_LOCAL_OUTPUT:-} && -s ${QMRI_LOCAL_OUTPUT}/cohort/roistats.csv ]]; then
    OUT_LOCAL=$QMRI_LOCAL_OUTPUT
    say "local run: the end-to-end tests' output $OUT_LOCAL"
else
    t0=$SECONDS
    say "same workflow locally -> $OUT_LOCAL"
    if ! timeout -s KILL "$TIMEOUT_S" snakemake --cores 2 "${LOCAL_ARGS[@]}" \
        >"$SCRATCH/log/snakemake-local.log" 2>&1; then
        echo "slurm-ci: the local run failed; its log ends:" >&2
        tail -n 60 "$SCRATCH/log/snakemake-local.log" >&2
        exit 1
    fi
    say "local run: $((SECONDS - t0)) s"
fi

# Every table: session, subject and cohort CSVs.
list_tables() { (cd "$1" && find sub-* cohort -name '*.csv' | LC_ALL=C sort); }
if ! diff <(list_tables "$OUT_LOCAL") <(list_tables "$OUT_SLURM"); then
    echo "slurm-ci: the two runs wrote different sets of tables (< local, > SLURM)" >&2
    exit 1
fi
n_tables=0 n_diff=0
while read -r table; do
    n_tables=$((n_tables + 1))
    if ! cmp -s "$OUT_LOCAL/$table" "$OUT_SLURM/$table"; then
        n_diff=$((n_diff + 1))
        echo "slurm-ci: differs: $table" >&2
        diff "$OUT_LOCAL/$table" "$OUT_SLURM/$table" | head -n 6 >&2 || true
    fi
done < <(list_tables "$OUT_LOCAL")
if [[ $n_diff -ne 0 ]]; then
    echo "slurm-ci: $n_diff of $n_tables tables differ between SLURM and local runs" >&2
    exit 1
fi
say "all $n_tables tables byte-identical (SLURM vs local)"
