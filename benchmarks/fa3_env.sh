# Source on the device machine after device_env.sh: FlashAttention-3's prebuilt forward (`fa3-fwd`),
# carried as .device_fa3/fa3_fwd.tar.xz (its 105 MB library packs to 9.6 MB; README.md says how).
tar -xJf .device_fa3/fa3_fwd.tar.xz -C /tmp/site
