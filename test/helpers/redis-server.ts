import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { createConnection, createServer } from 'node:net'
import { delimiter, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export interface RedisServer {
  url: string
  port: number
  /** Kills the server (SIGKILL: a crash, nothing is saved anyway) and waits for it to exit. */
  stop: () => Promise<void>
  /** Starts it again on the same port and waits until it answers PING. */
  restart: () => Promise<void>
}

/** Where the tests can reach a Redis, when REDIS_URL names one (stop/restart are then unavailable). */
export interface ExternalRedis {
  url: string
  stop?: undefined
  restart?: undefined
}

const STARTUP_TIMEOUT_MS = 5000
const PING_INTERVAL_MS = 20

function findOnPath (name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    const candidate = join(dir, name)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {}
  }
  return undefined
}

export const redisServerBinary = findOnPath('redis-server')
export const redisUrl = process.env.REDIS_URL || undefined

/** The reason to skip tests that need some Redis, or false when one is available. */
export const skipWithoutRedis: string | false =
  redisUrl === undefined && redisServerBinary === undefined ? 'redis-server not found and REDIS_URL not set' : false
/** The reason to skip tests that must kill and restart their own server, or false. */
export const skipWithoutRedisServer: string | false =
  redisServerBinary === undefined ? 'redis-server not found on PATH (needed to kill and restart a server)' : false

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address() as { port: number }
  await new Promise<void>(resolve => server.close(() => resolve()))
  return port
}

/** One PING over a raw socket, so that waiting for the server needs no client library. */
async function answersPing (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const socket = createConnection({ port, host: '127.0.0.1' })
    let reply = ''
    const done = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(500, () => done(false))
    socket.once('error', () => done(false))
    socket.on('data', chunk => {
      reply += chunk.toString('latin1')
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'))
    })
    socket.write('PING\r\n')
  })
}

// Servers still running; killed if the test process exits without stopping them.
const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

async function spawnRedis (binary: string, port: number): Promise<ChildProcess> {
  const child = spawn(binary, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe']
  })
  // Keep the tail of the log to explain a failed start.
  let log = ''
  const keep = (chunk: Buffer): void => { log = (log + chunk.toString()).slice(-4000) }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  let exited = false
  running.add(child)
  child.once('exit', () => {
    exited = true
    running.delete(child)
  })
  const started = Date.now()
  while (Date.now() - started < STARTUP_TIMEOUT_MS) {
    if (exited) break
    if (await answersPing(port)) return child
    await sleep(PING_INTERVAL_MS)
  }
  child.kill('SIGKILL')
  throw new Error(`redis-server did not answer PING on port ${port} within ${STARTUP_TIMEOUT_MS} ms:\n${log}`)
}

async function kill (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise(resolve => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
}

/**
 * Starts a private redis-server on a free loopback port, without persistence.
 * The caller must stop() it (t.teardown); it is also killed if the test process exits.
 */
export async function startRedisServer (): Promise<RedisServer> {
  if (redisServerBinary === undefined) throw new Error('redis-server not found on PATH')
  const binary = redisServerBinary
  let child: ChildProcess | undefined
  let port = 0
  // The port is free when chosen but could be taken before redis binds it: retry a few times.
  for (let attempt = 1; child === undefined; attempt++) {
    port = await freePort()
    try {
      child = await spawnRedis(binary, port)
    } catch (err) {
      if (attempt === 3) throw err
    }
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop () {
      if (child !== undefined) await kill(child)
    },
    async restart () {
      if (child !== undefined) await kill(child)
      child = await spawnRedis(binary, port)
    }
  }
}

/**
 * The Redis for tests that only need one: REDIS_URL when set (CI service),
 * otherwise a private server. Call stop?.() when done.
 */
export async function getRedis (): Promise<RedisServer | ExternalRedis> {
  if (redisUrl !== undefined) return { url: redisUrl }
  return await startRedisServer()
}
