#!/bin/sh
# Runs inside a fresh container (hack/lib/apt.sh's apt_install mounts it): a real `apt-get
# install` of every package in /list whose only source is $SOURCE (a `deb [trusted=yes] … ./`
# location: file:/repo, or http(s)://… with /ca.pem as the CA when it is mounted), then dpkg
# must hold each listed package installed. Prints one line: packages installed, listed, where
# from; on failure apt's last lines.
set -eu
before=$(dpkg-query -W -f '${db:Status-Abbrev}\n' | grep -c '^ii')
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
echo "deb [trusted=yes] $SOURCE ./" > /etc/apt/sources.list.d/offline.list
[ ! -f /ca.pem ] || echo 'Acquire::https::CaInfo "/ca.pem";' > /etc/apt/apt.conf.d/99offline-ca
apt-get update -q > /tmp/update.log 2>&1 || { tail -20 /tmp/update.log; exit 1; }
[ -s /list ] || { echo "no package list"; exit 1; }
# No fsync per file (as in Docker's official Debian images): the container is thrown away.
echo force-unsafe-io > /etc/dpkg/dpkg.cfg.d/unsafe-io
# shellcheck disable=SC2046 # one argument per package name
DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(cat /list) > /tmp/install.log 2>&1 \
  || { tail -20 /tmp/install.log; exit 1; }
tr -s ' \n' '\n' < /list | while read -r p; do
  dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || { echo "not installed: $p"; exit 1; }
done
after=$(dpkg-query -W -f '${db:Status-Abbrev}\n' | grep -c '^ii')
echo "apt-get install from $SOURCE alone: $(wc -w < /list) listed packages installed on $(uname -m) ($((after - before)) packages in all, $(grep -c '^Setting up' /tmp/install.log) set up)"
