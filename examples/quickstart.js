// The Flask-Cavage quickstart, in Fastify: one open route, one that requires an
// HTTP signature, then a real signed client: one accepted request and two refused.
import Fastify from 'fastify'
import cavagePlugin, { createSignedFetch } from 'fastify-cavage'

// keyId -> shared secret, as the seed's secret_loader returned.
const secrets = new Map([['access_key_1', '123456789']])

const app = Fastify()
await app.register(cavagePlugin, {
  secretLoader: async (keyId) => secrets.get(keyId) ?? null
})

app.get('/hello_world', async () => 'Hello, World!')
app.get('/hello_world_private', { config: { cavage: 'required' } }, async (request) => {
  return `Hello, ${request.cavage.keyId}! Your request was signed with ${request.cavage.algorithm}.`
})

const address = await app.listen({ port: 0, host: '127.0.0.1' })
console.log(`server listening on ${address}\n`)

async function call (label, path, signing) {
  let sent = new Headers()
  // The fetch option lets the demo show the headers createSignedFetch added, as sent.
  const client = signing
    ? createSignedFetch({ ...signing, fetch: (input, init) => { sent = init.headers; return fetch(input, init) } })
    : fetch
  const response = await client(`${address}${path}`)
  console.log(`--- ${label}`)
  console.log(`GET ${path}`)
  for (const [name, value] of sent) console.log(`  ${name}: ${value}`)
  console.log(`=> ${response.status} ${response.headers.get('www-authenticate') ?? ''}`.trimEnd())
  console.log(`   ${await response.text()}\n`)
  return response.status
}

const statuses = [
  await call('open route, no signature', '/hello_world'),
  await call('signed with the right secret', '/hello_world_private', { keyId: 'access_key_1', key: '123456789' }),
  await call('signed with a wrong secret', '/hello_world_private', { keyId: 'access_key_1', key: 'not-the-secret' }),
  await call('no signature on a private route', '/hello_world_private')
]
await app.close()

const expected = [200, 200, 401, 401]
if (statuses.join() !== expected.join()) {
  console.error(`unexpected statuses ${statuses.join()} (expected ${expected.join()})`)
  process.exit(1)
}
console.log('demo ok: 1 open, 1 accepted, 2 rejected as expected')
