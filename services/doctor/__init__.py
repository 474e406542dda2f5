"""`mdmpush doctor`: answer "APNs said 200 OK, so why did the device never check in?".

Three views, each a small module: what a device's sysdiagnose says compared with the registry
(`sysdiagnose`, `compare`), an enrollment's push history and diagnosis (`history`), and the
bundle Apple's engineers ask for when filing feedback (`feedback`). Kafka is only read, as
snapshots from the beginning to the high watermarks (`services.common.snapshot`); the sysdiagnose
check shows the device's values first and asks the registry through `registry_lookup`, which
skips the comparison with one sentence when Kafka is out of reach.
"""
