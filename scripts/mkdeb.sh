#!/bin/sh
# Builds build-deb/certgate_<version>_<arch>.deb with dpkg-deb: the binary (built with
# Debian's hardening flags, stripped), certgate(8), the systemd unit, and maintainer
# scripts that create the certgate system user and /var/lib/certgate (dist/debian/).
#   scripts/mkdeb.sh            build the package; prints its path
#   DEB_MAINTAINER="Name <mail>" the Maintainer field (the project has no address yet)
set -eu
cd "$(dirname "$0")/.."
out=build-deb
maint=${DEB_MAINTAINER:-certgate developers <certgate@certgate.invalid>}
version=$(sed -n 's/^project(certgate VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
arch=$(dpkg --print-architecture)
root=$out/root
# _FORTIFY_SOURCE's inlining makes gcc 12 see "may be used uninitialized" where the code
# sets the variable on every path (api.c's on_headers): a warning here, not an error
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
flags_c="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
flags_ld=$(dpkg-buildflags --get LDFLAGS)

cmake -S . -B $out/cmake -DCMAKE_BUILD_TYPE=None -DCMAKE_C_FLAGS="$flags_c" \
      -DCMAKE_EXE_LINKER_FLAGS="$flags_ld" >/dev/null
cmake --build $out/cmake --target certgate -j"$(nproc)" >/dev/null

rm -rf "$root"
make --no-print-directory install-files CERTGATE_BIN=$out/cmake/certgate DESTDIR="$root" \
     PREFIX=/usr UNITDIR=/lib/systemd/system >/dev/null
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/certgate"
gzip -9n "$root/usr/share/man/man8/certgate.8"
doc=$root/usr/share/doc/certgate
install -d -m 0755 "$doc" "$root/DEBIAN"
install -m 0644 dist/debian/copyright "$doc/copyright"
date=$(git log -1 --format=%aD 2>/dev/null || date -R)
printf 'certgate (%s) unstable; urgency=medium\n\n  * Package built from %s.\n\n -- %s  %s\n' \
    "$version" "$(git describe --always --dirty 2>/dev/null || echo source)" "$maint" "$date" |
    gzip -9n >"$doc/changelog.gz"
for s in postinst prerm postrm; do install -m 0755 dist/debian/$s "$root/DEBIAN/$s"; done

# shared-library dependencies, as dpkg-shlibdeps computes them
mkdir -p $out/shlibs/debian
printf 'Source: certgate\n\nPackage: certgate\nArchitecture: any\n' >$out/shlibs/debian/control
shlibs=$(cd $out/shlibs && dpkg-shlibdeps -O "$OLDPWD/$root/usr/bin/certgate" 2>/dev/null |
         sed -n 's/^shlibs:Depends=//p')
size=$(du -k -s --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: certgate
Version: $version
Architecture: $arch
Maintainer: $maint
Installed-Size: $size
Depends: $shlibs, adduser
Section: net
Priority: optional
Description: HTTPS gateway with ActiveGate-compatible certificate management
 certgate terminates TLS, forwards requests to an upstream, and lets operators
 manage the certificate it serves through custom.properties or a REST API
 compatible with Dynatrace ActiveGate's custom SSL certificate feature, without
 a restart. It runs as the systemd service certgate.service, as the system user
 certgate, with its data in /var/lib/certgate.
CONTROL
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"
deb=$out/certgate_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
