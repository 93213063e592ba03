#!/bin/sh
# Runs inside the emulated arm64 gateway as vmtest.service (systemd is PID
# 1), from the payload disk cross/vm/gateway.sh attaches at /opt/vm. Two
# boots: the first installs the .deb and puts the service through its
# paces; the second is a cold boot of the installed gateway, timed. Prints
# PASS/FAIL lines, "N passed, N failed" and "VM: check exited N", then
# powers off.
#
# The host side: a pymodbus RTU server on the pty behind the guest's
# /dev/ttyS0, a nats-server reached at 10.0.2.100:4222 (a qemu guestfwd to a
# loopback port), and the gpio-sim modules on the payload disk.
P=/opt/vm
S=/var/lib/vmtest
mkdir -p "$S"
pass=0
fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
TOKEN=$(cat "$P/token")
api() { curl -sk --max-time 5 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:8443/api/v1/$1"; }
# The first sample of a metric family (with its labels) on /metrics.
metric() { curl -sk --max-time 5 https://127.0.0.1:8443/metrics | grep "^$1" | head -1 | awk '{print $NF}'; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# wait_until SECONDS COMMAND...: polls COMMAND every half second.
wait_until() {
  limit=$1; shift
  end=$(($(date +%s) + limit))
  while ! "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.5
  done
}
prop() { systemctl show -p "$1" --value outpost; }
active() { [ "$(prop ActiveState)" = active ] && [ "$(prop SubState)" = running ]; }
acked_some() { n=$(metric outpost_uplink_acked_events_total); [ -n "$n" ] && [ "${n%.*}" -gt 0 ]; }
drained() { n=$(metric outpost_uplink_backlog_events); [ "${n%.*}" = 0 ]; }
finish() {
  echo "$pass passed, $fail failed"
  echo "VM: check exited $fail"
  sync
  systemctl poweroff
  exit 0
}

if [ ! -f "$S/phase1" ]; then
  echo "VM: phase 1: install, configure, supervise, upgrade"
  # --- install ---
  t0=$(uptime_s)
  if dpkg -i "$P/outpost_old.deb" > "$S/dpkg1.log" 2>&1; then ok "dpkg -i installs the package"
  else bad "dpkg -i installs the package" "$(tail -5 "$S/dpkg1.log")"; fi
  if wait_until 60 active; then
    st=$(prop StatusText)
    case "$st" in
      *"devices online"*) ok "the service is active (running) through READY=1 (status: $st)" ;;
      *) bad "the service reports its status" "StatusText='$st'" ;;
    esac
  else
    bad "the service reaches active (running)" "$(systemctl status outpost --no-pager 2>&1 | tail -15)"
  fi
  [ "$(prop Type)" = notify ] && ok "Type=notify" || bad "Type=notify" "$(prop Type)"
  groups=" $(id -nG outpost 2>/dev/null) "
  case "$groups" in *" dialout "*) in_dialout=1 ;; *) in_dialout=0 ;; esac
  case "$groups" in *" gpio "*) in_gpio=1 ;; *) in_gpio=0 ;; esac
  [ "$in_dialout$in_gpio" = 11 ] && ok "the user outpost is in dialout and gpio (groups:$groups)" \
    || bad "the user outpost is in dialout and gpio" "groups:$groups"
  [ "$(stat -c %U /var/lib/outpost)" = outpost ] && ok "/var/lib/outpost belongs to outpost" \
    || bad "/var/lib/outpost belongs to outpost" "$(stat -c %U:%G /var/lib/outpost)"
  [ -f /usr/share/man/man1/outpostd.1.gz ] && ok "the man page is installed" || bad "the man page is installed" "missing"

  # --- a simulated GPIO chip (gpio-sim, out of tree) with line 5 named DOOR ---
  insmod "$P/configfs.ko" 2>/dev/null
  insmod "$P/gpio-sim.ko"
  mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
  C=/sys/kernel/config/gpio-sim/chip0
  mkdir -p $C/bank0/line5
  echo 16 > $C/bank0/num_lines
  echo DOOR > $C/bank0/line5/name
  echo 1 > $C/live
  sim=$(cat $C/bank0/chip_name)
  SIM_SYS=/sys/devices/platform/$(cat $C/dev_name)/$sim
  udevadm settle
  [ "$(stat -c %G "/dev/$sim")" = gpio ] && ok "udev gives /dev/$sim to the group gpio (the package's rule)" \
    || bad "udev gives /dev/$sim to the group gpio" "$(ls -l "/dev/$sim")"

  # --- the site's configuration, as a technician would write it ---
  md5_default=$(md5sum /etc/outpost/outpost.toml | cut -d' ' -f1)
  sed -e "s#@SIM_CHIP@#/dev/$sim#" "$P/outpost.toml" > /etc/outpost/outpost.toml
  mkdir -p /var/lib/outpost/web
  cp "$P/tokens.json" /var/lib/outpost/web/tokens.json
  chown -R outpost:outpost /var/lib/outpost/web
  # The test waits seconds, not the shipped 30 s, for the watchdog.
  mkdir -p /etc/systemd/system/outpost.service.d
  printf '[Service]\nWatchdogSec=6s\n' > /etc/systemd/system/outpost.service.d/90-vmtest.conf
  systemctl daemon-reload
  if outpostd check-config /etc/outpost/outpost.toml > "$S/check.log" 2>&1; then ok "outpostd check-config accepts the site's file"
  else bad "outpostd check-config accepts the site's file" "$(cat "$S/check.log")"; fi
  systemctl restart outpost
  wait_until 60 active || bad "restarted with the site's file" "$(journalctl -u outpost -n 20 --no-pager)"

  # --- Modbus RTU over the guest's UART to the host's pymodbus ---
  volts() { api devices | grep -q '"tag":"voltage","value":"231"'; }
  if wait_until 60 volts; then ok "Modbus RTU over /dev/ttyS0: the host's simulator answers (voltage 231)"
  else bad "Modbus RTU over /dev/ttyS0" "$(api devices | head -c 600)"; fi

  # --- a GPIO edge on gpio-sim ---
  door() { api devices | grep -q "\"tag\":\"door\",\"value\":\"$1\""; }
  wait_until 30 door false || bad "the door input reads its resting level" "$(api devices | head -c 600)"
  echo pull-up > "$SIM_SYS/sim_gpio5/pull"
  if wait_until 30 door true; then ok "a rising edge on gpio-sim line DOOR is seen"
  else bad "a rising edge on gpio-sim line DOOR is seen" "$(api devices | head -c 600)"; fi

  # --- delivery to the host ---
  if wait_until 90 acked_some; then ok "events are delivered to the host's nats-server (loopback forward)"
  else bad "events are delivered to the host's nats-server" "$(api overview)"; fi

  # --- SIGSTOP: the watchdog notices and systemd restarts the daemon ---
  pid=$(prop MainPID); n0=$(prop NRestarts)
  kill -STOP "$pid"
  restarted() { [ "$(prop MainPID)" != "$pid" ] && [ "$(prop MainPID)" != 0 ] && active; }
  if wait_until 90 restarted && [ "$(prop NRestarts)" -gt "$n0" ]; then
    if journalctl -u outpost --no-pager | grep -qi "watchdog timeout"; then
      ok "SIGSTOP: the watchdog stops being fed, systemd restarts outpostd"
    else
      bad "SIGSTOP: restarted by the watchdog" "no watchdog timeout in the journal"
    fi
  else
    bad "SIGSTOP: the watchdog restarts outpostd" "MainPID $(prop MainPID), NRestarts $(prop NRestarts)"
  fi

  # --- kill -9: restarted, the log continues ---
  wait_until 60 drained
  pid=$(prop MainPID); n0=$(prop NRestarts)
  kill -9 "$pid"
  if wait_until 60 restarted && [ "$(prop NRestarts)" -gt "$n0" ]; then ok "kill -9: systemd restarts outpostd"
  else bad "kill -9: systemd restarts outpostd" "MainPID $(prop MainPID), NRestarts $(prop NRestarts)"; fi

  # --- the upgrade keeps the configuration and the log ---
  md5_site=$(md5sum /etc/outpost/outpost.toml | cut -d' ' -f1)
  pid=$(prop MainPID)
  if dpkg -i "$P/outpost_new.deb" > "$S/dpkg2.log" 2>&1; then ok "dpkg -i upgrades to $(dpkg-query -W -f='${Version}' outpost)"
  else bad "dpkg -i upgrades" "$(tail -5 "$S/dpkg2.log")"; fi
  [ "$(md5sum /etc/outpost/outpost.toml | cut -d' ' -f1)" = "$md5_site" ] \
    && [ "$md5_site" != "$md5_default" ] \
    && ok "the upgrade keeps the site's /etc/outpost/outpost.toml" \
    || bad "the upgrade keeps the configuration" "$(cat "$S/dpkg2.log")"
  if wait_until 60 restarted; then ok "the upgrade restarts the service"
  else bad "the upgrade restarts the service" "MainPID $(prop MainPID) (was $pid)"; fi
  [ -f /var/lib/outpost/events.db ] && ok "the event log is kept across the upgrade" \
    || bad "the event log is kept" "$(ls -la /var/lib/outpost)"

  if wait_until 120 drained; then ok "the backlog drains after the faults"
  else bad "the backlog drains" "$(api overview)"; fi
  touch "$S/phase1"
  finish
fi

echo "VM: phase 2: a cold boot of the installed gateway"
ready_us=$(prop ActiveEnterTimestampMonotonic)
if wait_until 120 active; then
  ready_us=$(prop ActiveEnterTimestampMonotonic)
  ok "after a cold boot the service is active (running) through READY=1"
else
  bad "after a cold boot the service is active" "$(systemctl status outpost --no-pager | tail -15)"
fi
if wait_until 120 acked_some; then
  first=$(uptime_s)
  ok "after a cold boot events reach the host"
else
  first=
  bad "after a cold boot events reach the host" "$(api overview)"
fi
sleep 20
pid=$(prop MainPID)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
echo "VM: boot to READY=1 $(awk -v u="$ready_us" 'BEGIN { printf "%.1f", u / 1e6 }') s (kernel start to the service active); to the first delivered event ${first:-?} s; outpostd RSS ${rss} KiB (peak ${hwm} KiB)"
if wait_until 120 drained; then ok "the backlog drains (everything accepted was acknowledged by the host)"
else bad "the backlog drains" "$(api overview)"; fi
systemctl stop outpost
finish
