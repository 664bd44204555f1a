import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { InvalidArgumentError, type StorError } from '../errors.ts'
import type { Logger } from '../logger.ts'

/** The host an operator's `--http-listen PORT` binds to: metrics and the status page stay on this machine unless asked otherwise. */
export const DEFAULT_HTTP_HOST = '127.0.0.1'

export interface HttpAddress { host: string, port: number }

/**
 * Parses `--http-listen`: `PORT`, `HOST:PORT` or `[IPv6]:PORT`; port 0 picks a free one.
 * A bare port binds to 127.0.0.1, so nothing is exposed by accident.
 */
export function parseHttpListen (text: string): HttpAddress {
  const hint = 'write PORT, HOST:PORT or [IPv6]:PORT, e.g. 127.0.0.1:9100 (port 0 picks a free one)'
  const m = /^(?:(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):)?(\d{1,5})$/.exec(text.trim())
  if (m == null) throw new InvalidArgumentError(`--http-listen: "${text}" is not an address; ${hint}`)
  const port = Number(m[3])
  if (port > 65535) throw new InvalidArgumentError(`--http-listen: port ${port} is above 65535; ${hint}`)
  return { host: m[1] ?? m[2] ?? DEFAULT_HTTP_HOST, port }
}

/** Why a server could not listen on `addr`, as a one-line error naming the option that gave it (`--http-listen`, `--listen`). */
export function listenError (option: string, addr: HttpAddress, err: NodeJS.ErrnoException): StorError {
  const why = err.code === 'EADDRINUSE'
    ? 'is in use by another program; choose another port (0 picks a free one)'
    : err.code === 'EADDRNOTAVAIL'
      ? 'is not an address of this machine'
      : err.code === 'EACCES' ? 'needs privileges (ports below 1024); choose a port above 1023' : `cannot be listened on (${err.code ?? err.message})`
  return new InvalidArgumentError(`${option}: ${addr.host}:${addr.port} ${why}`)
}

/** A reply: status, content type and body; headers beyond these are the server's. */
export interface HttpReply { status: number, type: string, body: string | Uint8Array }

export type Route = (req: IncomingMessage) => Promise<HttpReply> | HttpReply

export interface HttpServer {
  /** e.g. http://127.0.0.1:9100 (the port actually bound) */
  readonly url: string
  close: () => Promise<void>
}

/**
 * A small read-only HTTP server: GET (and HEAD) on exact paths, nothing else. A route that
 * throws answers 500 with its message; the daemon goes on.
 */
export async function startHttpServer (addr: HttpAddress, routes: Record<string, Route>, log: Logger): Promise<HttpServer> {
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    let reply: HttpReply
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      reply = { status: 405, type: 'text/plain; charset=utf-8', body: `${req.method ?? ''} is not allowed here; only GET\n` }
    } else if (route == null) {
      reply = { status: 404, type: 'text/plain; charset=utf-8', body: `no page ${path}; try ${Object.keys(routes).join(', ')}\n` }
    } else {
      try {
        reply = await route(req)
      } catch (err: any) {
        log.error('http %s: %s', path, err.stack ?? err.message)
        reply = { status: 500, type: 'text/plain; charset=utf-8', body: `internal error: ${String(err.message ?? err)}\n` }
      }
    }
    const body = typeof reply.body === 'string' ? Buffer.from(reply.body) : reply.body
    res.writeHead(reply.status, {
      'content-type': reply.type,
      'content-length': body.byteLength,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      // the pages load nothing from elsewhere and may not be framed by another site
      'content-security-policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    })
    res.end(req.method === 'HEAD' ? undefined : body)
  }
  const server: Server = createServer((req, res) => {
    handle(req, res).catch(err => { log.error('http: %s', err.message); res.destroy() })
  })
  // a scraper that holds a connection open must not keep the daemon from stopping
  server.keepAliveTimeout = 5000
  await new Promise<void>((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException): void => { reject(listenError('--http-listen', addr, err)) }
    server.once('error', failed)
    server.listen(addr.port, addr.host, () => { server.off('error', failed); resolve() })
  })
  server.on('error', err => { log.error('http: %s', err.message) })
  const bound = server.address() as AddressInfo
  const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address
  return {
    url: `http://${host}:${bound.port}`,
    async close () {
      server.closeAllConnections()
      await new Promise<void>(resolve => { server.close(() => { resolve() }) })
    }
  }
}
