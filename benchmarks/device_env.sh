# Source on the device machine (torch 2.11 image, no network): makes the project importable and
# gives it the ffmpeg binary and the two pure-Python wheels carried in .device/ (see README.md).
set -eu
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/*.whl
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.device/ffmpeg.xz'), open('/tmp/ffmpeg', 'wb'))"
chmod +x /tmp/ffmpeg
export PYTHONPATH="$PWD:/tmp/site" FFMPEG_BINARY=/tmp/ffmpeg PYTHONUNBUFFERED=1
set +eu
