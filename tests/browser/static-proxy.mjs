// static-proxy.mjs: serves the console's files (ui/) the way quarry will -- GET / is ui/index.html,
// GET /ui/<path> the file, GET /ui/config.json the public configuration, all with quarry's
// Content-Security-Policy -- and passes every other request (the API, SSE streams included) to a
// quarry server unchanged. For the browser tests until quarry serves ui/ itself; the paths are the
// same, so the tests run either way (QUARRY_UI_PROXY=0 talks to quarry directly).
//
//   node static-proxy.mjs --upstream http://127.0.0.1:8080 [--port 0] [--ui DIR]
import http from 'node:http';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.svg': 'image/svg+xml', '.png': 'image/png',
  '.ico': 'image/x-icon', '.txt': 'text/plain; charset=utf-8', '.woff2': 'font/woff2',
};

/** quarry's policy for the console (connect-src adds the OpenID issuers' origins). */
export function consoleCsp(connectOrigins = [], frameAncestors = "'self'") {
  return [
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    `connect-src ${["'self'", ...connectOrigins].join(' ')}`, `frame-ancestors ${frameAncestors}`,
    "base-uri 'none'", "form-action 'self'", "object-src 'none'",
  ].join('; ');
}

/**
 * Starts the proxy on 127.0.0.1. opts: upstream (quarry's base URL), port (0: a free one), uiDir,
 * oidc (the config.json "oidc" object or null). Resolves to {url, close()}.
 */
export async function startProxy({ upstream, port = 0, uiDir = path.resolve(HERE, '../../ui'), oidc = null, version = 'dev' }) {
  const up = new URL(upstream);
  const csp = consoleCsp(oidc?.issuer ? [new URL(oidc.issuer).origin] : []);
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const p = url.pathname;
    if ((req.method === 'GET' || req.method === 'HEAD') && (p === '/' || p.startsWith('/ui/'))) {
      const common = { 'Content-Security-Policy': csp, 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-cache', 'Referrer-Policy': 'no-referrer' };
      if (p === '/ui/config.json') {
        res.writeHead(200, { ...common, 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ oidc, version }));
        return;
      }
      const rel = p === '/' ? 'index.html' : decodeURIComponent(p.slice(4));
      const file = path.resolve(uiDir, rel);
      if (!file.startsWith(uiDir + path.sep)) {
        res.writeHead(404, common).end();
        return;
      }
      try {
        const data = await fs.readFile(file);
        res.writeHead(200, { ...common, 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream' });
        res.end(req.method === 'HEAD' ? undefined : data);
      } catch {
        res.writeHead(404, { ...common, 'Content-Type': 'text/plain' }).end('not found');
      }
      return;
    }
    const headers = { ...req.headers, host: up.host };
    const out = http.request({ hostname: up.hostname, port: up.port, path: req.url, method: req.method, headers }, (ures) => {
      res.writeHead(ures.statusCode, ures.headers);
      ures.pipe(res);
    });
    out.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'text/plain' });
      res.end('quarry did not answer');
    });
    res.on('close', () => out.destroy()); // the browser stopped (a stopped answer): stop upstream too
    req.pipe(out);
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name, dflt) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : dflt;
  };
  const p = await startProxy({ upstream: arg('upstream', 'http://127.0.0.1:8080'), port: Number(arg('port', 0)), uiDir: path.resolve(arg('ui', path.resolve(HERE, '../../ui'))) });
  console.log(`console on ${p.url}`);
}
