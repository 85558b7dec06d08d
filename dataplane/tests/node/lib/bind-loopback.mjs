// Preload (node --import) that makes any listen() without an explicit host bind 127.0.0.1 instead of
// all interfaces. Used to keep server-everything (which calls app.listen(PORT)) on loopback only.
import net from 'node:net';

const origListen = net.Server.prototype.listen;
net.Server.prototype.listen = function patchedListen(...args) {
  const first = args[0];
  if (typeof first === 'number' || (typeof first === 'string' && /^[0-9]+$/.test(first))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  } else if (first && typeof first === 'object' && !('path' in first) && first.host === undefined) {
    args[0] = { ...first, host: '127.0.0.1' };
  }
  return origListen.apply(this, args);
};
