# Source on the device machine in a call that carries .device_ray/ (see README.md), alone or after
# device_env.sh: installs Ray 2.60 (Java jar removed), the jsonschema packages it needs and boto3
# (pipeline/storage/fetch.py imports it even for local output) into device_env.sh's /tmp/site.
set -eu
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device_ray/*.whl
chmod +x /tmp/site/ray/core/src/ray/raylet/raylet /tmp/site/ray/core/src/ray/gcs/gcs_server
export PYTHONPATH="$PWD:/tmp/site"
set +eu
