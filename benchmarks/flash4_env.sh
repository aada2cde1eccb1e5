# Source on the device machine to install FlashAttention-4 from the wheels flash4_wheels.sh fetched.
# Two calls on one warm machine: the first carries .fa4a/ (half of the DSL library, kept in /tmp), the
# second carries .fa4b/ and installs everything into the image's own Python (its .pth files then
# apply), so later calls on that machine import flash_attn.cute whatever they carry.
set -eu
mkdir -p /tmp/fa4
if [ -d .fa4a ]; then cp .fa4a/* /tmp/fa4/; fi
if [ -d .fa4b ]; then
    cat /tmp/fa4/cu13.part.aa .fa4b/cu13.part.ab > /tmp/fa4/nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl
    python3 -m pip install -q --no-index --no-deps --no-compile /tmp/fa4/*.whl .fa4b/*.whl
    python3 -c "import flash_attn.cute; print('flash_attn.cute imports')"
fi
set +eu
