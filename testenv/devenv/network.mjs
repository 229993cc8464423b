// network.mjs starts the reference atproto network from @atproto/dev-env for atkafka's Go tests
// (testenv/devenv.go): a PLC, one or two PDSes and optionally Ozone and the AppView (@atproto/bsky, indexing the
// first PDS's firehose). When everything answers it prints ONE JSON line on stdout describing the network, then
// serves a small control endpoint so tests can stop and restart the PLC and Ozone mid-test. It exits on
// SIGTERM/SIGINT or when stdin closes, so a Go test that dies never leaves it running.
//
// Usage: node network.mjs [--second-pds] [--ozone] [--appview] [--pg-url URL] [--pg-schema NAME]
//                         [--appview-schema NAME] [--dir DIR]
// --ozone and --appview need --pg-url. Ozone's tables go in schema --pg-schema (default ozone), the AppView's in
// --appview-schema (default bsky) and its bsync's in <appview-schema>_bsync; names are letters and underscores.
//
// Everything else it writes goes to stderr: stdout carries only the JSON line.
import fs from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
// Only the parts we start: dev-env's index also loads the appview (@atproto/bsky), about a second of CPU per
// network that only --appview needs. The deep paths bypass the package's export map, which is safe with the exact
// version package.json pins.
import { TestPds } from './node_modules/@atproto/dev-env/dist/pds.js'
import { TestPlc } from './node_modules/@atproto/dev-env/dist/plc.js'

const ADMIN_PASSWORD = 'admin-pass' // what dev-env hard-codes for the PDS and Ozone
const MODERATOR = { handle: 'moderator.test', password: 'moderator-pass' }

// Libraries log with console.log here and there; stdout is reserved for the one JSON line the Go side parses.
const writeStdout = process.stdout.write.bind(process.stdout)
console.log = console.info = console.debug = console.error

const { values: args } = parseArgs({
  options: {
    'second-pds': { type: 'boolean', default: false },
    ozone: { type: 'boolean', default: false },
    'pg-url': { type: 'string' },
    'pg-schema': { type: 'string', default: 'ozone' },
    appview: { type: 'boolean', default: false },
    'appview-schema': { type: 'string', default: 'bsky' },
    dir: { type: 'string' },
  },
})
for (const flag of ['ozone', 'appview']) {
  if (args[flag] && !args['pg-url']) {
    console.error(`devenv: --${flag} needs --pg-url`)
    process.exit(2)
  }
}
if (args.ozone && args.appview && args['pg-schema'] === args['appview-schema']) {
  console.error('devenv: Ozone and the AppView need distinct schemas (--pg-schema, --appview-schema)')
  process.exit(2)
}

const { TestOzone, createOzoneDid } = args.ozone ? await import('./node_modules/@atproto/dev-env/dist/ozone.js') : {}
const { Secp256k1Keypair } = args.ozone ? await import('@atproto/crypto') : {}
const { TestBsky } = args.appview ? await import('./node_modules/@atproto/dev-env/dist/bsky.js') : {}
const { TestBsync } = args.appview ? await import('./node_modules/@atproto/dev-env/dist/bsync.js') : {}
const { mockResolvers } = args.appview ? await import('./node_modules/@atproto/dev-env/dist/util.js') : {}

// TestPds puts its SQLite files and blobs under os.tmpdir(); a private folder we remove on exit keeps runs from
// filling /tmp.
const dir = args.dir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'atkafka-devenv-')))
await fs.mkdir(dir, { recursive: true })
process.env.TMPDIR = dir

const net_ = { plc: null, pds: [], ozone: null, ozoneConfig: null, bsync: null, bsky: null, control: null }
let stopping = false

process.on('SIGTERM', () => shutdown(0))
process.on('SIGINT', () => shutdown(0))
// stdin is a pipe held by the Go test: when the test process dies, the pipe closes and we follow.
process.stdin.on('end', () => shutdown(0))
process.stdin.on('error', () => shutdown(0))
process.stdin.resume()
// A background job failing (e.g. Ozone pushing to an unreachable appview) must not take the network down.
process.on('unhandledRejection', (err) => console.error('devenv: unhandled rejection:', err))

try {
  writeStdout(JSON.stringify(await start()) + '\n')
} catch (err) {
  fail(err)
}

async function start() {
  // Free ports come from the OS (ephemeral range), never dev-env's defaults 2581-2587 that a developer's own
  // network may hold. PLC and Ozone get fixed ports because they are restarted on the same port mid-test.
  const plcPort = await freePort()
  net_.plc = await TestPlc.create({ port: plcPort })

  let ozoneDid, ozoneKey, ozoneUrl
  if (args.ozone) {
    // The Ozone DID must exist before the PDS starts (modServiceDid), and its labeler endpoint must be Ozone's
    // real URL: the PDS resolves it to proxy requests carrying `atproto-proxy: <did>#atproto_labeler`, while
    // createOzoneDid writes a placeholder endpoint.
    const ozonePort = await freePort()
    ozoneUrl = `http://localhost:${ozonePort}`
    ozoneKey = await Secp256k1Keypair.create({ exportable: true })
    ozoneDid = await createOzoneDid(net_.plc.url, ozoneKey)
    await net_.plc.getClient().updateData(ozoneDid, ozoneKey, (op) => ({
      ...op,
      services: { ...op.services, atproto_labeler: { type: 'AtprotoLabeler', endpoint: ozoneUrl } },
    }))
    net_.ozoneConfig = {
      port: ozonePort,
      plcUrl: net_.plc.url,
      serverDid: ozoneDid,
      signingKey: ozoneKey,
      dbPostgresUrl: args['pg-url'],
      dbPostgresSchema: args['pg-schema'],
      // Not wired to an AppView, not even --appview's (started later): a closed loopback port makes any appview
      // call fail fast instead of hanging.
      appviewUrl: 'http://127.0.0.1:1',
      appviewDid: 'did:example:appview',
    }
  }

  const pdsCount = args['second-pds'] ? 2 : 1
  for (let i = 0; i < pdsCount; i++) {
    const port = await freePort()
    const pds = await TestPds.create({
      port,
      didPlcUrl: net_.plc.url,
      ...(ozoneDid ? { modServiceUrl: ozoneUrl, modServiceDid: ozoneDid } : {}),
    })
    if (i > 0) {
      // Both PDSes would otherwise publish http://localhost:<port> in their accounts' DID documents, and
      // service filters match on the host name alone. 127.0.0.1 is a second loopback name that needs no DNS.
      // Safe to change now: createAccount reads it per call, and no account exists yet.
      pds.ctx.cfg.service.publicUrl = `http://127.0.0.1:${port}`
    }
    net_.pds.push(pds)
  }

  // Before any account exists, so that the AppView resolves every handle it indexes through its patched
  // resolvers (startAppView), the Ozone moderator's included.
  const appview = args.appview ? await startAppView() : null

  let moderator = null
  if (args.ozone) {
    // Ozone pushes takedowns to the first PDS, so an Ozone takedown also shows up on that PDS's firehose.
    Object.assign(net_.ozoneConfig, { pdsUrl: net_.pds[0].url, pdsDid: net_.pds[0].ctx.cfg.service.did })
    net_.ozone = await TestOzone.create(net_.ozoneConfig)
    // A real PDS account as moderator, so tests can log in through the PDS and have it proxy to Ozone like a
    // production moderator client does.
    const agent = net_.pds[0].getAgent()
    const res = await agent.createAccount({
      handle: MODERATOR.handle,
      email: 'moderator@example.com',
      password: MODERATOR.password,
    })
    await net_.ozone.addModeratorDid(res.data.did)
    moderator = { identifier: MODERATOR.handle, password: MODERATOR.password, did: res.data.did, pdsUrl: net_.pds[0].url }
  }

  net_.control = await serveControl()
  return {
    plcUrl: net_.plc.url,
    pds: net_.pds.map((p) => ({ url: p.url, publicUrl: p.ctx.cfg.service.publicUrl, did: p.ctx.cfg.service.did })),
    ozone: args.ozone ? { url: ozoneUrl, did: ozoneDid } : null,
    appview,
    moderator,
    adminPassword: ADMIN_PASSWORD,
    controlUrl: `http://127.0.0.1:${net_.control.address().port}`,
    dir,
    pid: process.pid,
  }
}

// startAppView starts the reference AppView indexing the first PDS's firehose from its first event. It needs a
// bsync: it scans bsync's operation, mute and notification streams from start-up, and without one each scan
// fails and retries every 100 ms for as long as the network runs. Both keep their tables in PostgreSQL schemas
// of their own.
async function startAppView() {
  const pds = net_.pds[0]
  const bsyncApiKey = 'bsync-api-key'
  net_.bsync = await TestBsync.create({
    port: await freePort(),
    apiKeys: [bsyncApiKey],
    dbUrl: args['pg-url'],
    dbSchema: `${args['appview-schema']}_bsync`,
  })
  net_.bsky = await TestBsky.create({
    port: await freePort(),
    plcUrl: net_.plc.url,
    repoProvider: pds.url.replace(/^http/, 'ws'),
    dbPostgresUrl: args['pg-url'],
    dbPostgresSchema: args['appview-schema'],
    bsyncUrl: net_.bsync.url,
    bsyncApiKey,
  })
  net_.bsync.ctx.dataplaneClients = [net_.bsky.ctx.dataplane]
  // .test handles have no DNS: like dev-env's TestNetwork, the AppView asks the PDS who holds a handle of its
  // domain, or every profile it serves would say handle.invalid. Only the AppView's resolvers are patched; the
  // PDS keeps resolving as it does in networks without the AppView.
  mockResolvers(net_.bsky.ctx.idResolver, pds)
  mockResolvers(net_.bsky.dataplane.idResolver, pds)
  return { url: net_.bsky.url, did: net_.bsky.ctx.cfg.serverDid }
}

// serveControl answers POST /plc/stop, /plc/start, /ozone/stop and /ozone/start. Restarts reuse the same port and
// the same data: the PLC keeps its in-memory database object, Ozone its PostgreSQL schema.
function serveControl() {
  const actions = {
    '/plc/stop': async () => {
      // destroy() also "closes" the mock database, which is a no-op: its contents survive for the restart.
      await net_.plc.server.destroy()
    },
    '/plc/start': async () => {
      await net_.plc.server.start()
    },
    '/ozone/stop': async () => {
      if (!net_.ozoneConfig) throw new Error('network started without Ozone')
      await net_.ozone?.close()
      net_.ozone = null
    },
    '/ozone/start': async () => {
      if (!net_.ozoneConfig) throw new Error('network started without Ozone')
      if (net_.ozone) return
      // Same DID, key, port and schema; migrations are already applied and team members live in the database,
      // so the moderator added at start-up keeps its role. (TestOzone.create also registers fresh internal
      // admin/moderator DIDs at the PLC, so the PLC must be up while Ozone starts.)
      net_.ozone = await TestOzone.create(net_.ozoneConfig)
    },
  }
  const server = http.createServer(async (req, res) => {
    const action = actions[req.url]
    if (req.method !== 'POST' || !action) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}')
      return
    }
    try {
      await action()
      console.error(`devenv: ${req.url} done`)
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
    } catch (err) {
      console.error(`devenv: ${req.url} failed:`, err)
      res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: String(err) }))
    }
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

async function shutdown(code) {
  if (stopping) return
  stopping = true
  // Closing can hang on a stuck connection; the Go side waits for us, so never take longer than this.
  setTimeout(() => {
    console.error('devenv: shutdown timed out')
    process.exit(code || 1)
  }, 10_000).unref()
  const closers = [
    net_.control && new Promise((r) => net_.control.close(r)),
    net_.ozone?.close(),
    net_.bsky?.close(),
    net_.bsync?.close(),
    ...net_.pds.map((p) => p.close()),
    net_.plc?.close(),
  ]
  for (const r of await Promise.allSettled(closers)) {
    if (r.status === 'rejected') console.error('devenv: close failed:', r.reason)
  }
  await fs.rm(dir, { recursive: true, force: true }).catch((err) => console.error('devenv: rm failed:', err))
  process.exit(code)
}

function fail(err) {
  console.error('devenv: start failed:', err)
  shutdown(1)
}
