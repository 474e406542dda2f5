"""`mdmpush doctor`: answer "APNs said 200 OK, so why did the device never check in?".

Three views, each a small module: what a device's sysdiagnose says compared with the registry
(`sysdiagnose`, `compare`), an enrollment's push history and diagnosis (`history`), and the
bundle Apple's engineers ask for when filing feedback (`feedback`). All Kafka reads go through
`reader`, which reads a topic once from the beginning to its high watermarks.
"""
