# Run here (not on the device): fetches FlashAttention-4 and its CUDA 13 CuTe DSL wheels for the device
# image (Python 3.12, x86-64) into .fa4a/ and .fa4b/, both ignored by git. The DSL's compiler library
# is a 92 MB wheel, more than one call may carry, so it travels in two halves (see flash4_env.sh).
set -eu
wheels=$(mktemp -d)
python3 -m pip download -q --pre --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -d "$wheels" \
    flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
    nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 apache-tvm-ffi==0.1.15.post2 \
    torch-c-dlpack-ext==0.1.5 quack-kernels==0.6.5
rm -rf .fa4a .fa4b && mkdir .fa4a .fa4b
split -b 46M "$wheels"/nvidia_cutlass_dsl_libs_cu13-*.whl .fa4a/cu13.part.
mv .fa4a/cu13.part.ab .fa4b/
mv "$wheels"/*.whl .fa4b/ && rm .fa4b/nvidia_cutlass_dsl_libs_cu13-*.whl
rmdir "$wheels"
grep -qx '/.fa4a/' .git/info/exclude || printf '/.fa4a/\n/.fa4b/\n' >> .git/info/exclude
