#!/bin/sh
# Runs inside a container (hack/lib/apt.sh's apt_closure mounts it): apt with an EMPTY dpkg
# status, APT::Architecture $ARCH and the flat repository /repo as its only source simulates
# `apt-get install` of every package in /list. Prints how many packages it would install; fails
# (apt's last lines on stderr) when it cannot resolve the list, or when the simulation takes a
# package that is neither $ARCH nor `all`.
set -eu
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
echo "deb [trusted=yes] file:/repo ./" > /etc/apt/sources.list.d/offline.list
: > /tmp/status
printf '%s\n' "#clear APT::Architectures;" "APT::Architecture \"$ARCH\";" "APT::Architectures { \"$ARCH\"; };" \
  "Dir::State::status \"/tmp/status\";" "Dir::State::extended_states \"/tmp/extended_states\";" > /tmp/apt.conf
apt-get -c /tmp/apt.conf update -q > /tmp/update.log 2>&1 || { tail -30 /tmp/update.log >&2; exit 1; }
# shellcheck disable=SC2046 # one argument per package name
apt-get -c /tmp/apt.conf -s install $(cat /list) > /tmp/sim.log 2>&1 || { tail -30 /tmp/sim.log >&2; exit 1; }
if grep "^Inst " /tmp/sim.log | grep -v "\[$ARCH\]" | grep -v "\[all\]" | grep -q .; then
  echo "non-$ARCH packages in the simulation:" >&2
  grep "^Inst " /tmp/sim.log | grep -v "\[$ARCH\]" | grep -v "\[all\]" | head -5 >&2
  exit 1
fi
grep -c "^Inst " /tmp/sim.log
