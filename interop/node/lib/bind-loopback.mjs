// Preloaded with `node --import` into servers that call `listen(PORT)` with no
// host (server-everything): binds them to 127.0.0.1 instead of every interface,
// and prints `BOUND <port>` on stdout once listening, so PORT=0 works.

import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const [first, second] = args;
  const portOnly = (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) && typeof second !== 'string';
  if (portOnly) {
    args.splice(1, 0, '127.0.0.1');
    this.once('listening', () => process.stdout.write(`BOUND ${this.address().port}\n`));
  }
  return listen.apply(this, args);
};
