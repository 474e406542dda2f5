// Peer of tests/bench/bench_sender.py: @parse/node-apn (Parse Server's APNs client) pushing MDM
// notifications to the project's APNs simulator, driven the way a team would drive it: one
// Provider (one HTTP/2 connection, or `clients` with apn.MultiProvider), one send per device
// (each device has its own PushMagic), at most `window` sends in flight.
//
//   node push.js '{"modules": DIR, "port": P, "cert": F, "key": F, "ca": F, "topic": T,
//                  "count": N, "window": W, "clients": 1}'
//
// The benchmark counts the pushes at the simulator; this prints one JSON line with what the
// client saw (sent, failed, failure reasons, its CPU per push) so a failed run is never taken
// for a fast one.
'use strict';

const path = require('path');
const fs = require('fs');

const opts = JSON.parse(process.argv[2]);
const apn = require(path.join(opts.modules, 'node_modules', '@parse', 'node-apn'));

const providerOptions = {
  cert: fs.readFileSync(opts.cert),
  key: fs.readFileSync(opts.key),
  ca: fs.readFileSync(opts.ca),
  address: '127.0.0.1',
  port: opts.port,
  production: false,
  requestTimeout: 15000,
};
const provider = opts.clients > 1
  ? new apn.MultiProvider({ ...providerOptions, clientCount: opts.clients })
  : new apn.Provider(providerOptions);

async function main() {
  let next = 0;
  let sent = 0;
  const reasons = {};
  async function worker() {
    while (next < opts.count) {
      const n = next++;
      const note = new apn.Notification();
      note.topic = opts.topic;
      note.pushType = 'mdm';
      note.mdm = `magic-${n}`;
      note.expiry = 0;
      note.priority = 10;
      const result = await provider.send(note, n.toString(16).padStart(64, '0'));
      sent += result.sent.length;
      for (const failure of result.failed) {
        const reason = failure.response ? failure.response.reason : String(failure.error);
        reasons[reason] = (reasons[reason] || 0) + 1;
      }
    }
  }
  const started = process.hrtime.bigint();
  const cpu = process.cpuUsage();
  await Promise.all(Array.from({ length: opts.window }, worker));
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const used = process.cpuUsage(cpu);
  await provider.shutdown();
  // CPU per push (connection set-up included) does not depend on what else the machine runs.
  const cpuUsPerPush = (used.user + used.system) / opts.count;
  process.stdout.write(
    JSON.stringify({ sent, failed: opts.count - sent, reasons, elapsed, cpuUsPerPush }) + '\n');
}

main().catch(error => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
