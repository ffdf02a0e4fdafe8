// The Socket.IO peer for `perf compare`: what a team would otherwise build a chat backend
// with. Run two (or more) of these on one redis-server:
//
//   node server.js --port 3001 --redis redis://127.0.0.1:6379 --secret S
//
// * WebSocket transport only (Engine.IO v4): /socket.io/?EIO=4&transport=websocket
// * auth: the Socket.IO connect packet carries {"token": JWT}; HS256 with the same secret and
//   claims (sub, exp, nbf) as Connect's gateways.
// * every socket joins a room named after its user id (all of a user's devices share it);
// * event "send" {to, body} is emitted to room `to` as "message" {from, body} through the
//   Redis adapter (so it reaches sockets on every server process), then acknowledged with
//   {status: "delivered"}. Socket.IO has no delivery confirmation: the ack means "published".
'use strict';

const crypto = require('crypto');
const http = require('http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const port = Number(arg('port', process.env.PORT || 3001));
const host = arg('host', '127.0.0.1');
const redisUrl = arg('redis', process.env.REDIS_URL || 'redis://127.0.0.1:6379');
const secret = arg('secret', process.env.JWT_SECRET || '');
if (!secret) {
  console.error('server.js: --secret (or JWT_SECRET) is required');
  process.exit(2);
}

function b64url(buf) {
  return buf.toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

// Returns the token's subject, or null if the token is not valid now.
function verify(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const mac = b64url(crypto.createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest());
  const a = Buffer.from(mac);
  const b = Buffer.from(parts[2]);
  if (a.length !== b.length || !crypto.timingSafeEqual(a, b)) return null;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  } catch (_) {
    return null;
  }
  if (!header || header.alg !== 'HS256') return null;
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.exp !== 'number' || claims.exp <= now) return null;
  if (typeof claims.nbf === 'number' && claims.nbf > now) return null;
  return typeof claims.sub === 'string' && claims.sub ? claims.sub : null;
}

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  pub.on('error', (e) => console.error('redis pub:', e.message));
  sub.on('error', (e) => console.error('redis sub:', e.message));
  await Promise.all([pub.connect(), sub.connect()]);

  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(pub, sub),
    transports: ['websocket'],
    serveClient: false,
  });

  io.use((socket, next) => {
    const user = verify(socket.handshake.auth && socket.handshake.auth.token);
    if (!user) return next(new Error('unauthorized'));
    socket.data.user = user;
    return next();
  });

  io.on('connection', (socket) => {
    socket.join(socket.data.user);
    socket.on('send', (msg, ack) => {
      const reply = typeof ack === 'function' ? ack : () => {};
      if (!msg || typeof msg.to !== 'string' || !msg.to) {
        reply({ status: 'failed', reason: 'bad request' });
        return;
      }
      io.to(msg.to).emit('message', { from: socket.data.user, body: msg.body });
      reply({ status: 'delivered' });
    });
  });

  // Same accept backlog as a tuned gateway, so a connect storm measures the server.
  httpServer.listen(port, host, 4096, () => {
    console.log(`socket.io peer listening on ${host}:${port}, redis ${redisUrl}`);
  });
  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
