#!/bin/sh
# Installs what cherryq needs to build, test and run its default job on
# Debian 12 (run as root). The CUDA toolkit is optional and not installed
# here: configure with -Dcuda=true where nvcc is present.
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    gcc g++ libc6-dev meson ninja-build pkg-config \
    libopenblas-dev libcjson-dev libcmocka-dev \
    libvulkan-dev glslc spirv-tools mesa-vulkan-drivers vulkan-validationlayers \
    bible-kjv bible-kjv-text >/dev/null
