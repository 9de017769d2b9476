#!/usr/bin/env bash
# Compiles the VMOD against the Varnish installed where it runs (the host, or the
# Debian 13 root when scripts/build-vmod runs it there): generates the VCL glue with
# that Varnish's vmodtool.py and the counters with its vsctool.py, then links
# libobjmapper.a (built once on the host) into libvmod_objmapper.so.
# Usage: vmod/build.sh LIBOBJMAPPER_A OUTDIR
set -euo pipefail
lib=$1
out=$2
src=$(cd "$(dirname "$0")" && pwd)
capi_include=$(cd "$src/../crates/capi/include" && pwd)

mkdir -p "$out"
cd "$out"
vmodtool=$(pkg-config --variable=vmodtool varnishapi)
vsctool=$(pkg-config --variable=vsctool varnishapi)
python3 "$vmodtool" -o vcc_objmapper_if "$src/vmod_objmapper.vcc" >/dev/null
cp "$src/objmapper.vsc" .
python3 "$vsctool" -ch objmapper.vsc
: >config.h

# -Wl,--exclude-libs,ALL: only the VMOD's own symbols are exported, never
# libobjmapper's or the Rust runtime's.
cc -std=gnu11 -O2 -g -fPIC -shared \
  -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
  -I. -I"$capi_include" $(pkg-config --cflags varnishapi) \
  -o libvmod_objmapper.so \
  "$src/vmod_objmapper.c" vcc_objmapper_if.c VSC_objmapper.c \
  "$lib" -Wl,--exclude-libs,ALL -lpthread -ldl -lm
echo "$out/libvmod_objmapper.so"
