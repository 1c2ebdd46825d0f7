#!/usr/bin/env node
// Dev/test only: the reference ATProto PDS (@atproto/pds) plus an in-memory
// did:plc directory (@did-plc/server), both bound to 127.0.0.1.
//
//   node launch.mjs --data-dir DIR [--port N] [--plc-port N] [--rate-limits]
//                   [--blob-upload-limit BYTES]
//                   [--rate-limit-window-seconds N] [--rate-limit-day-window-seconds N]
//                   [--ready-file FILE] [--log-level LEVEL] [--exit-with-parent]
//
// Options may also come from the environment: PDS_PORT, PLC_PORT,
// PDS_DATA_DIRECTORY, PDS_ADMIN_PASSWORD, SANDBOX_RATE_LIMITS=1, LOG_LEVEL,
// SANDBOX_BLOB_UPLOAD_LIMIT. A port of 0 (the default) picks a free one.
//
// The upload limit (PDS_BLOB_UPLOAD_LIMIT) is 52428800 bytes unless given: the
// platform's tapes are MP4 blobs of up to 50 MB (the tape lexicon's maxSize),
// which the reference PDS's own default (5 MiB) would refuse.
//
// --rate-limit-window-seconds N (tests only; implies --rate-limits): the PDS's
// per-account repository-write budget keeps its points (5000, hard-coded in
// @atproto/pds dist/index.js as `repo-write-hour`) but its window lasts N
// seconds instead of an hour, so a test can spend a budget and see it reset.
// The daily budget (`repo-write-day`, 35000 points) is scaled by the same
// factor (24 N seconds) unless --rate-limit-day-window-seconds says otherwise.
// Responses say so honestly: `ratelimit-policy: 5000;w=N`. The launcher wraps
// @atproto/xrpc-server's createServer to change the two durations before the
// PDS builds its limiters, and refuses to start if it did not find both.
//
// When both servers listen it prints ONE JSON line on stdout
//   {"ready": true, "pdsUrl": ..., "plcUrl": ..., "pid": ..., ...}
// (and writes the same object to --ready-file, atomically, if given).
// SIGTERM / SIGINT shut both down cleanly (exit 0).
//
// Restartable: secrets (JWT secret, admin password, PLC rotation key) are kept
// in DIR/launcher-secrets.json, and every PLC operation accepted by the
// in-memory directory is appended to DIR/plc-ops.jsonl and replayed on the
// next start, so a restarted PDS on the same data dir keeps its accounts and
// their DIDs still resolve.

import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'
import path from 'node:path'
import process from 'node:process'

const HOST = '127.0.0.1'
// Admits the tape lexicon's largest video (52,428,800 bytes).
const DEFAULT_BLOB_UPLOAD_LIMIT = 52428800

function usage(msg) {
  process.stderr.write(`launch.mjs: ${msg}\n`)
  process.stderr.write(
    'usage: node launch.mjs --data-dir DIR [--port N] [--plc-port N] [--rate-limits] ' +
      '[--blob-upload-limit BYTES] [--rate-limit-window-seconds N] ' +
      '[--rate-limit-day-window-seconds N] ' +
      '[--ready-file FILE] [--log-level LEVEL] [--exit-with-parent]\n',
  )
  process.exit(2)
}

function parseArgs(argv) {
  const opts = {
    dataDir: process.env.PDS_DATA_DIRECTORY || '',
    port: Number(process.env.PDS_PORT || 0),
    plcPort: Number(process.env.PLC_PORT || 0),
    rateLimits: ['1', 'true'].includes(process.env.SANDBOX_RATE_LIMITS || ''),
    blobUploadLimit: Number(process.env.SANDBOX_BLOB_UPLOAD_LIMIT || DEFAULT_BLOB_UPLOAD_LIMIT),
    windowSeconds: 0,
    dayWindowSeconds: 0,
    readyFile: '',
    logLevel: process.env.LOG_LEVEL || 'warn',
    exitWithParent: false,
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`)
      return argv[++i]
    }
    switch (arg) {
      case '--data-dir':
        opts.dataDir = value()
        break
      case '--port':
        opts.port = Number(value())
        break
      case '--plc-port':
        opts.plcPort = Number(value())
        break
      case '--rate-limits':
        opts.rateLimits = true
        break
      case '--blob-upload-limit':
        opts.blobUploadLimit = Number(value())
        break
      case '--rate-limit-window-seconds':
        opts.windowSeconds = Number(value())
        opts.rateLimits = true
        break
      case '--rate-limit-day-window-seconds':
        opts.dayWindowSeconds = Number(value())
        opts.rateLimits = true
        break
      case '--ready-file':
        opts.readyFile = value()
        break
      case '--log-level':
        opts.logLevel = value()
        break
      case '--exit-with-parent':
        opts.exitWithParent = true
        break
      case '-h':
      case '--help':
        usage('help')
        break
      default:
        usage(`unknown argument ${arg}`)
    }
  }
  if (!opts.dataDir) usage('--data-dir is required')
  for (const [name, port] of [
    ['--port', opts.port],
    ['--plc-port', opts.plcPort],
  ]) {
    if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`${name}: bad port`)
  }
  if (!Number.isInteger(opts.blobUploadLimit) || opts.blobUploadLimit < 1) {
    usage('--blob-upload-limit: a positive number of bytes')
  }
  for (const [name, seconds] of [
    ['--rate-limit-window-seconds', opts.windowSeconds],
    ['--rate-limit-day-window-seconds', opts.dayWindowSeconds],
  ]) {
    if (!Number.isInteger(seconds) || seconds < 0) usage(`${name}: a whole number of seconds`)
  }
  if (opts.windowSeconds && !opts.dayWindowSeconds) opts.dayWindowSeconds = 24 * opts.windowSeconds
  opts.dataDir = path.resolve(opts.dataDir)
  return opts
}

// The write budgets' windows, changed where the PDS hands its limits to the XRPC
// server (`rateLimits.shared` of createServer's options; see dist/index.js).
const WRITE_LIMITS = { 'repo-write-hour': 'windowSeconds', 'repo-write-day': 'dayWindowSeconds' }

function shortenWriteWindows(opts) {
  const pdsRequire = createRequire(createRequire(import.meta.url).resolve('@atproto/pds'))
  const serverMod = pdsRequire('@atproto/xrpc-server/dist/server.js')
  const original = serverMod.createServer
  const seen = {}
  serverMod.createServer = (lexicons, options) => {
    for (const limit of options?.rateLimits?.shared ?? []) {
      const key = WRITE_LIMITS[limit.name]
      if (key && opts[key]) {
        seen[limit.name] = { points: limit.points, from: limit.durationMs / 1000, to: opts[key] }
        limit.durationMs = opts[key] * 1000
      }
    }
    return original(lexicons, options)
  }
  return seen
}

// A free loopback port (the PDS must know its own port before it starts: it
// is part of its public URL and of every DID document it publishes).
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, HOST, () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

// Make app.listen(port) bind to loopback only.
function bindLoopback(app) {
  const listen = app.listen.bind(app)
  app.listen = (port, ...rest) => listen(port, HOST, ...rest)
}

function loadSecrets(dataDir) {
  const file = path.join(dataDir, 'launcher-secrets.json')
  let secrets = {}
  if (fs.existsSync(file)) secrets = JSON.parse(fs.readFileSync(file, 'utf8'))
  const wanted = {
    jwtSecret: secrets.jwtSecret || randomBytes(16).toString('hex'),
    adminPassword:
      process.env.PDS_ADMIN_PASSWORD || secrets.adminPassword || randomBytes(12).toString('hex'),
    plcRotationKeyHex: secrets.plcRotationKeyHex || randomBytes(32).toString('hex'),
  }
  fs.writeFileSync(file, JSON.stringify(wanted, null, 2) + '\n', { mode: 0o600 })
  return wanted
}

function writeReadyFile(file, info) {
  const tmp = `${file}.tmp-${process.pid}`
  fs.writeFileSync(tmp, JSON.stringify(info) + '\n')
  fs.renameSync(tmp, file)
}

async function startPlc(port, opsFile) {
  const plcMod = await import('@did-plc/server')
  const { PlcServer, Database } = plcMod.default ?? plcMod
  const db = Database.mock()
  // Replay what earlier runs accepted, then journal every new operation.
  if (fs.existsSync(opsFile)) {
    const lines = fs.readFileSync(opsFile, 'utf8').split('\n').filter(Boolean)
    for (const line of lines) {
      const { did, op } = JSON.parse(line)
      await db.validateAndAddOp(did, op)
    }
  }
  const addOp = db.validateAndAddOp.bind(db)
  db.validateAndAddOp = async (did, op) => {
    await addOp(did, op)
    fs.appendFileSync(opsFile, JSON.stringify({ did, op }) + '\n')
  }
  const plc = PlcServer.create({ db, port })
  bindLoopback(plc.app)
  const server = await plc.start()
  return { plc, port: server.address().port }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  const blobDir = path.join(opts.dataDir, 'blobs')
  fs.mkdirSync(blobDir, { recursive: true })
  const secrets = loadSecrets(opts.dataDir)

  // Loggers read these when their modules load, so set them before importing.
  process.env.LOG_ENABLED = opts.logLevel === 'silent' ? 'false' : 'true'
  process.env.LOG_LEVEL = opts.logLevel === 'silent' ? 'fatal' : opts.logLevel

  const { plc, port: plcPort } = await startPlc(
    opts.plcPort,
    path.join(opts.dataDir, 'plc-ops.jsonl'),
  )
  const plcUrl = `http://${HOST}:${plcPort}`
  const port = opts.port || (await freePort())

  Object.assign(process.env, {
    PDS_HOSTNAME: 'localhost',
    PDS_PORT: String(port),
    PDS_DATA_DIRECTORY: opts.dataDir,
    PDS_BLOBSTORE_DISK_LOCATION: blobDir,
    PDS_JWT_SECRET: secrets.jwtSecret,
    PDS_ADMIN_PASSWORD: secrets.adminPassword,
    PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX: secrets.plcRotationKeyHex,
    PDS_DID_PLC_URL: plcUrl,
    PDS_DEV_MODE: 'true',
    PDS_INVITE_REQUIRED: 'false',
    PDS_SERVICE_HANDLE_DOMAINS: '.test',
    PDS_RATE_LIMITS_ENABLED: opts.rateLimits ? 'true' : 'false',
    PDS_BLOB_UPLOAD_LIMIT: String(opts.blobUploadLimit),
  })
  // Nothing in the sandbox may reach out to the network.
  delete process.env.PDS_CRAWLERS
  delete process.env.PDS_BSKY_APP_VIEW_URL
  delete process.env.PDS_BSKY_APP_VIEW_DID
  delete process.env.PDS_EMAIL_SMTP_URL

  const shorten = Boolean(opts.windowSeconds || opts.dayWindowSeconds)
  const windows = shorten ? shortenWriteWindows(opts) : {}
  const pdsMod = await import('@atproto/pds')
  const { PDS, envToCfg, envToSecrets, readEnv } = pdsMod.default ?? pdsMod
  const env = readEnv()
  const pds = await PDS.create(envToCfg(env), envToSecrets(env))
  if (shorten) {
    const wanted = Object.keys(WRITE_LIMITS).filter((name) => opts[WRITE_LIMITS[name]])
    const missing = wanted.filter((name) => !windows[name])
    if (missing.length) {
      // A PDS version that names its limits otherwise: never run with an hour-long
      // window a test believes is short.
      throw new Error(`short write windows: no ${missing.join(', ')} limit found`)
    }
  }
  bindLoopback(pds.app)
  await pds.start()

  let stopping = false
  const shutdown = async (signal) => {
    if (stopping) return
    stopping = true
    const force = setTimeout(() => {
      process.stderr.write(`launch.mjs: forced exit after ${signal}\n`)
      process.exit(1)
    }, 8000)
    force.unref()
    try {
      await pds.destroy()
      await plc.destroy()
    } catch (err) {
      process.stderr.write(`launch.mjs: error during shutdown: ${err?.stack ?? err}\n`)
    }
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
  if (opts.exitWithParent) {
    // A test run that dies without cleaning up must not leave a PDS behind.
    const parent = process.ppid
    setInterval(() => {
      if (process.ppid !== parent) void shutdown('parent exit')
    }, 500).unref()
  }

  const info = {
    ready: true,
    pdsUrl: `http://${HOST}:${port}`,
    plcUrl,
    pid: process.pid,
    port,
    plcPort,
    dataDir: opts.dataDir,
    rateLimits: opts.rateLimits,
    blobUploadLimit: opts.blobUploadLimit,
    writeWindows: windows,
  }
  if (opts.readyFile) writeReadyFile(opts.readyFile, info)
  process.stdout.write(JSON.stringify(info) + '\n')
}

main().catch((err) => {
  process.stderr.write(`launch.mjs: failed to start: ${err?.stack ?? err}\n`)
  process.exit(1)
})
