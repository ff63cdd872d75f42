// A client with an Ed25519 key calls a Fastify server that holds only the public
// key: createSignedFetch adds Date, Host (as sent), Digest and Signature to every
// request, with created/expires so a captured request dies after a minute.
import { generateKeyPairSync } from 'node:crypto'
import Fastify from 'fastify'
import cavagePlugin, { createSignedFetch } from 'fastify-cavage'

const { privateKey, publicKey } = generateKeyPairSync('ed25519')

const app = Fastify()
await app.register(cavagePlugin, {
  // The server knows public keys only; a private key never leaves the client.
  secretLoader: async (keyId) => keyId === 'client-1' ? publicKey : null,
  // hs2019 signatures may carry (created) instead of a Date header.
  requiredHeaders: ['(request-target)', 'host', ['date', '(created)'], ['digest', 'content-digest']]
})
app.post('/inbox', { config: { cavage: 'required' } }, async (request) => ({
  from: request.cavage.keyId,
  algorithm: request.cavage.algorithm,
  covered: request.cavage.headers,
  received: request.body
}))
const address = await app.listen({ port: 0, host: '127.0.0.1' })

const signedFetch = createSignedFetch({
  keyId: 'client-1',
  key: privateKey,
  created: true,
  expiresIn: 60,
  headers: ['(request-target)', '(created)', '(expires)', 'host', 'digest']
})

const response = await signedFetch(`${address}/inbox`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ hello: 'world' })
})
console.log(response.status, await response.json())
await app.close()
if (response.status !== 200) process.exit(1)
