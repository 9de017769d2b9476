#!/usr/bin/env bash
# Compiles ngx_http_objmapper_module.so against the nginx that nginx-dev describes
# (/usr/share/nginx/src: the configured headers and Debian's configure flags, which
# include --with-compat and --with-threads), linking libobjmapper.a into it.
# Usage: nginx/build.sh LIBOBJMAPPER_A OUTDIR
set -euo pipefail
lib=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
out=$2
src=$(cd "$(dirname "$0")" && pwd)
ngx_src=/usr/share/nginx/src

mkdir -p "$out"
out=$(cd "$out" && pwd)
so="$out/ngx_http_objmapper_module.so"
if [[ -f $so && $so -nt $lib && $so -nt $src/ngx_http_objmapper_module.c && $so -nt $src/config ]]; then
  echo "$so"
  exit 0
fi
work="$out/build"
rm -rf "$work"
cp -a "$ngx_src" "$work"
# shellcheck disable=SC1091
. "$work/conf_flags"
cd "$work"
OBJMAPPER_LIB="$lib" ./configure "${NGX_CONF_FLAGS[@]}" \
  --with-cc-opt="-g -O2 -fPIC -Wall -Wextra -Werror -Wno-unused-parameter" \
  --add-dynamic-module="$src" >configure.log 2>&1 || {
  tail -30 configure.log >&2
  exit 1
}
make -f objs/Makefile modules >make.log 2>&1 || {
  grep -E 'error|warning' make.log >&2 || tail -30 make.log >&2
  exit 1
}
cp objs/ngx_http_objmapper_module.so "$out/"
echo "$out/ngx_http_objmapper_module.so"
