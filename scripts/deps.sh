#!/bin/sh
# Installs the Debian packages certgate needs, when they are missing.
#   scripts/deps.sh build   compiler, CMake and the libraries certgate links
#   scripts/deps.sh test    the above plus the real clients and servers the tests drive
#   scripts/deps.sh fuzz    the build set plus clang (libFuzzer) for `make fuzz`
#   scripts/deps.sh bench   the above plus nginx, HAProxy, wrk and perf for `make bench`
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -eu
mode=${1:-build}

# node-llhttp ships llhttp's C sources, which CMake compiles from /usr/share/llhttp (the
# HTTP parser). On Debian 12 its dependencies (node-debug, node-semver) pull in nodejs and
# libnode108 too (12 more packages, nodejs 18 among them), although none of them is used.
pkgs="gcc make cmake pkg-config libc6-dev libssl-dev libuv1-dev node-llhttp \
libjansson-dev libcmocka-dev libcurl4-openssl-dev openssl ca-certificates"
case "$mode" in
  build) ;;
  test)  pkgs="$pkgs curl python3 openjdk-17-jre-headless nginx-light procps iproute2 testssl.sh prometheus pebble \
etcd-server etcd-client \
libfaketime" ;;
  fuzz)  pkgs="$pkgs clang" ;;
  bench) pkgs="$pkgs curl python3 openjdk-17-jre-headless nginx-light procps iproute2 \
haproxy wrk linux-perf valgrind" ;;
  *) echo "usage: $0 build|test|fuzz|bench" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deps: not a Debian system; install the equivalents of: $pkgs" >&2
  exit 0
fi

missing=""
for p in $pkgs; do
  # nginx-light, nginx and nginx-full all provide /usr/sbin/nginx
  if [ "$p" = nginx-light ] && command -v nginx >/dev/null 2>&1; then continue; fi
  if [ "$p" = nginx-light ] && [ -x /usr/sbin/nginx ]; then continue; fi
  # any JRE that brings keytool will do
  if [ "$p" = openjdk-17-jre-headless ] && command -v keytool >/dev/null 2>&1; then continue; fi
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing Debian packages:$missing" >&2
  echo "deps: run as root:  $cmd" >&2
  exit 1
fi
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Debian's nginx, haproxy and etcd-server packages start a service on install; keep them from
# grabbing ports on a build machine.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
if ! $cmd >/tmp/certgate-apt.log 2>&1; then
  apt-get update >>/tmp/certgate-apt.log 2>&1 || true
  $cmd >>/tmp/certgate-apt.log 2>&1 || { tail -20 /tmp/certgate-apt.log >&2; exit 1; }
fi
