#!/usr/bin/env bash
# Real Asterisk 22 for callcatch's tests: a Debian sid chroot, cached outside the checkout.
#
#   scripts/asterisk.sh build            build the root if missing (needs root, network)
#   scripts/asterisk.sh start [--fresh]  lay out the config, start, wait until fully booted
#                                        (--fresh: clear old CDRs, logs and voicemail first)
#   scripts/asterisk.sh stop             stop Asterisk and unmount /proc and /dev
#   scripts/asterisk.sh restart          stop, then start (keeps CDRs and logs)
#   scripts/asterisk.sh status           is it running?
#   scripts/asterisk.sh cli "command"    run an Asterisk CLI command
#
# Environment:
#   CALLCATCH_ASTERISK_ROOT   the chroot (default /var/cache/callcatch/asterisk-root)
#   CALLCATCH_AMI_SECRET      AMI secret of user "callcatch" (default test-ami-secret)
#   CALLCATCH_ARI_PASSWORD    ARI password of user "callcatch" (default test-ari-password)
#   CALLCATCH_BOOT_TIMEOUT    seconds to wait for "fully booted" (default 60)
#
# Configuration: tests/asterisk/* (the test base and overlay) plus asterisk-conf/* (what
# callcatch ships to installers), copied into $ROOT/etc/asterisk on every start.
set -euo pipefail

ROOT=${CALLCATCH_ASTERISK_ROOT:-/var/cache/callcatch/asterisk-root}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AMI_SECRET=${CALLCATCH_AMI_SECRET:-test-ami-secret}
ARI_PASSWORD=${CALLCATCH_ARI_PASSWORD:-test-ari-password}
BOOT_TIMEOUT=${CALLCATCH_BOOT_TIMEOUT:-60}
SUITE=sid
PACKAGES=asterisk,asterisk-modules,asterisk-config,asterisk-core-sounds-en-gsm

case $(readlink -m "$ROOT") in
    / | /usr | /etc | /var | /var/cache) echo "asterisk.sh: refusing ROOT=$ROOT" >&2; exit 1 ;;
esac

LOG_DIR=$ROOT/var/log/asterisk
CONSOLE_LOG=$LOG_DIR/callcatch-console.log
PID_FILE=$ROOT/run/asterisk/callcatch-asterisk.pid
ETC=$ROOT/etc/asterisk

die() {
    echo "asterisk.sh: $*" >&2
    exit 1
}

log() {
    echo "asterisk.sh: $*" >&2
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (chroot, mount)"
}

is_mounted() {
    # exact mount point match, from the kernel's view
    local target
    target=$(readlink -f "$1")
    awk -v t="$target" '$2 == t { found = 1 } END { exit !found }' /proc/self/mounts
}

mount_all() {
    local d
    for d in proc dev; do
        mkdir -p "$ROOT/$d"
        if ! is_mounted "$ROOT/$d"; then
            mount --bind "/$d" "$ROOT/$d"
        fi
    done
}

umount_all() {
    local d
    for d in dev proc; do
        if [ -d "$ROOT/$d" ] && is_mounted "$ROOT/$d"; then
            umount "$ROOT/$d" 2>/dev/null || umount -l "$ROOT/$d"
        fi
    done
}

# Directories Asterisk writes to: root-owned, because it runs as root inside the chroot
# (the package ships them owned by the chroot's "asterisk" user, which root cannot read
# through asterisk.conf's permissions otherwise).
fix_ownership() {
    local r=$1 d
    for d in etc/asterisk var/lib/asterisk var/log/asterisk var/spool/asterisk var/cache/asterisk; do
        mkdir -p "$r/$d"
        chown -R root:root "$r/$d"
    done
    mkdir -p "$r/run/asterisk"
}

safe_rm_root_tmp() {
    local r=$1
    [ -e "$r" ] || return 0
    local d
    for d in proc dev sys; do
        if [ -d "$r/$d" ] && is_mounted "$r/$d"; then
            umount "$r/$d" 2>/dev/null || umount -l "$r/$d"
        fi
        if [ -d "$r/$d" ] && is_mounted "$r/$d"; then
            die "$r/$d is still mounted; refusing to delete $r"
        fi
    done
    rm -rf --one-file-system "$r"
}

cmd_build() {
    if [ -x "$ROOT/usr/sbin/asterisk" ]; then
        fix_ownership "$ROOT"
        return 0
    fi
    need_root
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        apt-get install -y debootstrap
    fi
    local tmp=$ROOT.tmp
    safe_rm_root_tmp "$tmp"
    mkdir -p "$(dirname "$ROOT")"
    log "debootstrap $SUITE into $tmp (about a minute)"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp"
    fix_ownership "$tmp"
    [ -x "$tmp/usr/sbin/asterisk" ] || die "debootstrap finished but $tmp/usr/sbin/asterisk is missing"
    [ ! -e "$ROOT" ] || safe_rm_root_tmp "$ROOT"
    mv "$tmp" "$ROOT"
    log "built $ROOT ($(chroot "$ROOT" asterisk -V))"
}

pid_alive() {
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # a stale pid file whose pid now belongs to something else does not count
    case $(cat "/proc/$pid/comm" 2>/dev/null) in
        asterisk | chroot | setsid) return 0 ;;
        *) return 1 ;;
    esac
}

ast_rx() {
    chroot "$ROOT" asterisk -rx "$1"
}

install_config() {
    [ -d "$REPO/tests/asterisk" ] || die "missing $REPO/tests/asterisk"
    [ -d "$REPO/asterisk-conf" ] || die "missing $REPO/asterisk-conf"
    mkdir -p "$ETC"
    find "$ETC" -mindepth 1 -delete
    # The test base and overlay first...
    local f
    for f in "$REPO"/tests/asterisk/*.conf; do
        install -m 0640 "$f" "$ETC/"
    done
    # ...then the shipped files, as an installer would: secrets substituted.
    for f in "$REPO"/asterisk-conf/*.conf; do
        if [ -e "$ETC/$(basename "$f")" ]; then
            die "tests/asterisk/$(basename "$f") would shadow the shipped asterisk-conf/$(basename "$f")"
        fi
        sed -e "s|CHANGE_ME_AMI_SECRET|$AMI_SECRET|g" \
            -e "s|CHANGE_ME_ARI_PASSWORD|$ARI_PASSWORD|g" \
            "$f" >"$ETC/$(basename "$f")"
        chmod 0640 "$ETC/$(basename "$f")"
    done
}

# Keep Asterisk's name lookups on this machine. Per call, RTP/RTCP setup on an endpoint
# without an explicit transport (the shipped trunk) calls ast_find_ourip(), which resolves
# the host name and then A.ROOT-SERVERS.NET: with the host's resolv.conf that is a DNS
# query leaving loopback. Inside the chroot, the host name resolves from /etc/hosts and the
# only resolver is 127.0.0.1 (nothing listens: lookups fail at once).
# (rm first: never write through a symlink that points outside the chroot.)
isolate_dns() {
    rm -f "$ROOT/etc/hosts" "$ROOT/etc/resolv.conf"
    printf '127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        "$(hostname)" >"$ROOT/etc/hosts"
    printf '# written by scripts/asterisk.sh: no DNS outside loopback\nnameserver 127.0.0.1\n' \
        >"$ROOT/etc/resolv.conf"
}

clear_state() {
    log "--fresh: clearing CDRs, logs and voicemail"
    rm -f "$LOG_DIR"/cdr-csv/*.csv "$LOG_DIR"/master.db "$LOG_DIR"/messages.log \
        "$LOG_DIR"/callcatch-console.log "$LOG_DIR"/full "$LOG_DIR"/queue_log
    rm -rf "$ROOT"/var/spool/asterisk/voicemail/default
    rm -f "$ROOT"/var/lib/asterisk/astdb.sqlite3
}

port_open() {
    # bash's /dev/tcp: no extra tools needed
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

fail_start() {
    echo "asterisk.sh: $*" >&2
    echo "---- last lines of $CONSOLE_LOG ----" >&2
    tail -n 40 "$CONSOLE_LOG" >&2 || true
    echo "----" >&2
    # don't leave a half-started Asterisk or the mounts behind
    cmd_stop >/dev/null 2>&1 || true
    exit 1
}

cmd_start() {
    local fresh=0
    for a in "$@"; do
        case $a in
            --fresh) fresh=1 ;;
            *) die "start: unknown option $a" ;;
        esac
    done
    need_root
    cmd_build
    if pid_alive; then
        die "already running (pid $(cat "$PID_FILE")); use restart or stop"
    fi
    install_config
    isolate_dns
    mkdir -p "$LOG_DIR/cdr-csv" "$ROOT/run/asterisk"
    [ "$fresh" -eq 0 ] || clear_state
    rm -f "$ROOT"/run/asterisk/asterisk.ctl "$PID_FILE"
    mount_all
    local t0 t1
    t0=$(date +%s.%N)
    echo "==== $(date -u '+%F %T') start ====" >>"$CONSOLE_LOG"
    # -f: stay in the foreground (we background it ourselves), -c would need a tty.
    setsid chroot "$ROOT" /usr/sbin/asterisk -f -U root -G root -n -vvv \
        </dev/null >>"$CONSOLE_LOG" 2>&1 &
    echo $! >"$PID_FILE"
    local deadline=$((SECONDS + BOOT_TIMEOUT))
    # The control socket appears early in boot; then wait for "fully booted".
    until [ -S "$ROOT/run/asterisk/asterisk.ctl" ]; do
        pid_alive || fail_start "Asterisk exited during startup"
        [ $SECONDS -lt $deadline ] || fail_start "no control socket after ${BOOT_TIMEOUT}s"
        sleep 0.1
    done
    until timeout 10 chroot "$ROOT" asterisk -rx 'core waitfullybooted' >/dev/null 2>&1; do
        pid_alive || fail_start "Asterisk exited during startup"
        [ $SECONDS -lt $deadline ] || fail_start "not fully booted after ${BOOT_TIMEOUT}s"
        sleep 0.2
    done
    local port
    for port in 5038 8088; do
        until port_open "$port"; do
            pid_alive || fail_start "Asterisk exited during startup"
            [ $SECONDS -lt $deadline ] || fail_start "nothing listening on 127.0.0.1:$port (5038 AMI, 8088 HTTP/ARI)"
            sleep 0.1
        done
    done
    t1=$(date +%s.%N)
    log "Asterisk fully booted in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')s (pid $(cat "$PID_FILE"), log $CONSOLE_LOG)"
}

cmd_stop() {
    if pid_alive; then
        local pid
        pid=$(cat "$PID_FILE")
        timeout 10 chroot "$ROOT" asterisk -rx 'core stop now' >/dev/null 2>&1 || true
        local i
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "still alive after 10 s, killing pid $pid"
            kill -TERM "$pid" 2>/dev/null || true
            sleep 1
            kill -KILL "$pid" 2>/dev/null || true
        fi
        # wait for it to be reaped/gone
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$PID_FILE" "$ROOT"/run/asterisk/asterisk.ctl
    if [ -d "$ROOT" ]; then
        umount_all
    fi
}

cmd_status() {
    if pid_alive; then
        echo "running (pid $(cat "$PID_FILE"))"
        ast_rx 'core show uptime' || true
    else
        echo "not running"
        return 3
    fi
}

cmd_cli() {
    [ $# -ge 1 ] || die "usage: $0 cli \"command\""
    pid_alive || die "Asterisk is not running"
    ast_rx "$*"
}

main() {
    local cmd=${1:-}
    [ $# -eq 0 ] || shift
    case $cmd in
        build) need_root; cmd_build ;;
        start) cmd_start "$@" ;;
        stop) need_root; cmd_stop ;;
        restart) need_root; cmd_stop; cmd_start ;;
        status) cmd_status ;;
        cli) cmd_cli "$@" ;;
        *) die "usage: $0 {build|start [--fresh]|stop|restart|status|cli \"command\"}" ;;
    esac
}

main "$@"
