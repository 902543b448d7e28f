#!/bin/bash
# Packs what tools/gpu/device_check.sh needs on a GPU machine that has the
# CUDA toolkit but not Debian's libraries: a -Dcuda=true build made here
# (executables + the test list), the shared libraries they load that such a
# machine may lack (OpenBLAS, cJSON, cmocka, the Vulkan loader, libgomp,
# libgfortran), and the KJV corpus + default model for the CLI checks.
# Writes .gpu/ (ignored by git; name it in the device tool's carry list).
#
#   tools/gpu/pack.sh [BUILD_DIR]      (default build-gpu; configured if absent)
set -euo pipefail
cd "$(dirname "$0")/../.."
b=${1:-build-gpu}
if [ ! -f "$b/build.ninja" ]; then
    PATH=/usr/bin:$PATH meson setup "$b" -Dcuda=true >/dev/null
fi
ninja -C "$b" >/dev/null
grep -q '^/.gpu/$' .git/info/exclude 2>/dev/null || echo /.gpu/ >>.git/info/exclude
rm -rf .gpu && mkdir -p .gpu/lib
# executables and the test list, as paths relative to the repository root
find "$b" -type f -perm -u+x -not -path '*.p/*' -not -path '*/meson-*' -not -name '*.so*' \
    -not -name '*.a' >.gpu/files
echo "$b/meson-info/intro-tests.json" >>.gpu/files
tar cf - -T .gpu/files | xz -T1 --lzma2=preset=6,dict=192MiB >.gpu/build.tar.xz
for l in libopenblas.so.0 libcjson.so.1 libcmocka.so.0 libvulkan.so.1 libgomp.so.1 libgfortran.so.5 libquadmath.so.0; do
    p=$(ldconfig -p | awk -v l="$l" '$1 == l && /x86-64/ && !p {p = $NF} END {print p}')
    [ -n "$p" ] || { echo "pack.sh: $l not found" >&2; exit 1; }
    cp -L "$p" .gpu/lib/
done
tar cf - -C .gpu lib | xz -T0 -6 >.gpu/lib.tar.xz && rm -rf .gpu/lib
files=(data/kjv_train.txt data/kjv_valid.txt data/kjv_test.txt)
[ -f out/default/model.safetensors ] && files+=(out/default/config.json out/default/model.safetensors out/default/tokenizer.json)
tar cf - "${files[@]}" | xz -T0 -6 >.gpu/data.tar.xz
echo "build dir $(pwd)/$b" >.gpu/origin
du -sh .gpu/*
